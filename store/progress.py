"""How learning is going, for ``netpol-gen status``: what was delivered to the store and when.

The edges themselves (with their first sighting) come from :func:`netpol_gen.store.query.list_edges`;
this adds the deliveries (collector batches and imported files), so a user can tell "nothing new was
learnt" from "nothing arrived", and :func:`summarize` turns both into the status: an edge is new when
it was first seen; edges are counted by the hour of their first sighting. "Settled" needs both no new
edge in the last hour and deliveries still arriving: a silent store is not a settled one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import SOURCE_CAPTURE
from netpol_gen.model.listings import Deliveries, EdgeRow, NodeDelivery
from netpol_gen.store import schema as t

COLLECT = "collect"  # the kind serve and collect --db record collector batches under (store.batches.KIND)
IMPORT_SOURCE = "import:"  # what ``import --server`` names its batches: files, not nodes
RECENT = 3600.0  # seconds of deliveries a node's interval is measured over


def node_of(source: str) -> str | None:
    """The node of a collector batch's recorded source (``collect:NODE``, `` as USER`` through serve);
    None for a file posted by ``import --server``."""
    sender = source.split(" as ", 1)[0]
    return None if sender.startswith(IMPORT_SOURCE) else sender.removeprefix("collect:")


def node_deliveries(conn: Connection, now: float) -> tuple[NodeDelivery, ...]:
    """Per node, its latest delivery (kept or summed by retention) and its recent interval: two
    aggregates per source, the recent ones over the ``imported_at`` index."""
    i, d = t.imports.c, t.delivery_totals.c
    latest: dict[str, float] = {}
    rows = list(conn.execute(sa.select(i.source, sa.func.max(i.imported_at)).where(i.kind == COLLECT)
                             .group_by(i.source)))
    if sa.inspect(conn).has_table(t.delivery_totals.name):
        rows += conn.execute(sa.select(d.source, d.last_at).where(d.kind == COLLECT))
    for source, at in rows:
        node = node_of(source)
        if node is not None:
            latest[node] = max(latest.get(node, 0.0), float(at))
    recent: dict[str, tuple[int, float, float]] = {}
    for source, count, first, last in conn.execute(
            sa.select(i.source, sa.func.count(), sa.func.min(i.imported_at), sa.func.max(i.imported_at))
            .where(i.kind == COLLECT, i.imported_at >= now - RECENT).group_by(i.source)):
        node = node_of(source)
        if node is not None:
            known = recent.get(node, (0, first, last))
            recent[node] = (known[0] + count, min(known[1], first), max(known[2], last))
    nodes = []
    for node, last in sorted(latest.items()):
        count, first, newest = recent.get(node, (0, 0.0, 0.0))
        interval = (newest - first) / (count - 1) if count > 1 else None
        nodes.append(NodeDelivery(node, last, interval, count))
    return tuple(nodes)


def read_deliveries(conn: Connection, now: float | None = None) -> Deliveries:
    """The deliveries recorded one by one plus those retention summed (``delivery_totals``), and per
    node its latest and its interval (as of ``now``)."""
    i, d = t.imports.c, t.delivery_totals.c
    count, flows, last = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(i.flows), 0), sa.func.max(i.imported_at))
    ).one()
    if sa.inspect(conn).has_table(t.delivery_totals.name):  # an older store opened only for reading may lack it
        rolled, rolled_flows, rolled_last = conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(d.batches), 0), sa.func.coalesce(sa.func.sum(d.flows), 0),
            sa.func.max(d.last_at))).one()
        count, flows = count + rolled, flows + rolled_flows
        last = max((ts for ts in (last, rolled_last) if ts is not None), default=None)
    return Deliveries(int(count), int(flows), None if last is None else float(last),
                      node_deliveries(conn, time.time() if now is None else now))


HOUR = 3600.0


@dataclass(frozen=True)
class HourCount:
    hour: str  # start of the hour, UTC, ISO 8601
    new_edges: int
    total_edges: int  # edges first seen up to the end of this hour


@dataclass(frozen=True)
class Status:
    state: str  # empty | idle | learning | settled
    edges: int
    new_last_hour: int
    last_new_edge: str | None
    deliveries: int
    flows: int
    last_delivery: str | None
    timeline: list[HourCount]
    # edges by how they were learnt: capture, conntrack, sockets (an edge learnt several ways counts in each)
    learnt_from: dict[str, int] = field(default_factory=dict)
    established_only: int = 0  # edges no connection of which was seen starting
    nodes: int = 0  # collectors that ever delivered
    behind: list[NodeLag] = field(default_factory=list)  # collectors whose deliveries stopped or fall behind


LATE_INTERVALS = 3  # a node is behind once its latest delivery is this many intervals old
LATE_SLACK = 30.0  # seconds added, for a store briefly busy
SILENT = 3 * 3600.0  # a node without a known interval is behind past this


@dataclass(frozen=True)
class NodeLag:
    node: str
    last_delivery: str
    age: float  # seconds since its latest delivery
    interval: float | None  # its usual seconds between deliveries, None if unknown


def behind(nodes: tuple[NodeDelivery, ...], now: float) -> list[NodeLag]:
    """The nodes whose latest delivery is older than :data:`LATE_INTERVALS` of their intervals (plus
    :data:`LATE_SLACK`), or than :data:`SILENT` when their interval is unknown: collectors that stopped,
    lost the store, or whose spool grows because the store does not keep up."""
    return [NodeLag(n.node, _iso(n.last) or "", round(now - n.last, 1), n.interval) for n in nodes
            if now - n.last > (SILENT if n.interval is None else LATE_INTERVALS * n.interval + LATE_SLACK)]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(edges: list[EdgeRow], new_last_hour: int, deliveries: Deliveries, now: float) -> str:
    if not edges and not deliveries.batches:
        return "empty"
    if deliveries.last is None or deliveries.last < now - HOUR:
        return "idle"
    return "learning" if new_last_hour else "settled"


def summarize(edges: list[EdgeRow], deliveries: Deliveries, now: float, hours: int) -> Status:
    """The status at ``now``, with a timeline of the last ``hours`` hours (hours without new edges left out)."""
    firsts = sorted(e.first_seen for e in edges if e.first_seen is not None)
    start = (now // HOUR - hours + 1) * HOUR
    total = sum(1 for e in edges if e.first_seen is None or e.first_seen < start)
    per_hour: dict[float, int] = {}
    for ts in firsts:
        if ts >= start:
            per_hour[ts // HOUR * HOUR] = per_hour.get(ts // HOUR * HOUR, 0) + 1
    timeline = []
    for hour, count in sorted(per_hour.items()):
        total += count
        timeline.append(HourCount(_iso(hour) or "", count, total))
    new_last_hour = sum(1 for ts in firsts if ts >= now - HOUR)
    learnt_from: dict[str, int] = {}
    established_only = 0
    for edge in edges:
        captured = edge.connections > sum(count for _, count in edge.established)
        established_only += not captured
        for source in ([SOURCE_CAPTURE] if captured else []) + [source for source, _ in edge.established]:
            learnt_from[source] = learnt_from.get(source, 0) + 1
    return Status(_state(edges, new_last_hour, deliveries, now), len(edges), new_last_hour,
                  _iso(firsts[-1] if firsts else None), deliveries.batches, deliveries.flows,
                  _iso(deliveries.last), timeline, dict(sorted(learnt_from.items())), established_only,
                  len(deliveries.nodes), behind(deliveries.nodes, now))
