"""How learning is going, for ``netpol-gen status``: what was delivered to the store and when.

The edges themselves (with their first sighting) come from :func:`netpol_gen.store.query.list_edges`;
this adds the deliveries (collector batches and imported files), so a user can tell "nothing new was
learnt" from "nothing arrived", and :func:`summarize` turns both into the status: an edge is new when
it was first seen; edges are counted by the hour of their first sighting. "Settled" needs both no new
edge in the last hour and deliveries still arriving: a silent store is not a settled one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import SOURCE_CAPTURE
from netpol_gen.store import schema as t
from netpol_gen.store.query import EdgeRow


@dataclass(frozen=True)
class Deliveries:
    batches: int  # collector batches and imported files
    flows: int
    last: float | None  # when the latest one was written (seconds since the epoch)


def read_deliveries(conn: Connection) -> Deliveries:
    """The deliveries recorded one by one plus those retention summed (``delivery_totals``)."""
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
    return Deliveries(int(count), int(flows), None if last is None else float(last))


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
                  _iso(deliveries.last), timeline, dict(sorted(learnt_from.items())), established_only)
