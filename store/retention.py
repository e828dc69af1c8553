"""Bounded growth: what ``serve --retain`` and ``netpol-gen prune`` remove or coarsen past the window.

What a store learns is bounded by the distinct traffic (edges, their samples, identities, DNS answers
per name and address): it stops growing once learning settles. Two tables grow with time instead:

- ``imports``: a row per collector batch (its id, for exactly-once), 8,640 a day per node at 10 s
  intervals. Rows of collector batches delivered before the window are summed into
  ``delivery_totals`` (per kind and source: batches, flows, latest delivery) and deleted, so
  ``status`` totals and each node's last delivery read the same. Ids of 64 characters (the file
  digests ``import`` and ``import --server`` record, one per file) are kept forever.
- ``shadow_denials``: a row per (set, edge, hour) past the shadow module's minute detail. Hours of
  days wholly before the window are merged into one row per day (keyed by the day's start, as its
  hour 0 was; side and policies of the latest hour), so ``watch --since`` counts to the day there.

Exactly-once with pruned ids: the store records the latest cutoff it pruned ids below
(:data:`IDS_PRUNED_BEFORE` in ``netpol_meta``, set in the transaction that deletes them). A batch is
cut after its newest flow and first delivered after it was cut, so a batch whose id was pruned has
its newest timestamp before that cutoff; :func:`check_fresh` (run by the delivering transaction after
claiming the ids) refuses every new collector batch whose newest timestamp is before the cutoff plus
:data:`CLOCK_SKEW`, or that has no timestamp at all. Nothing is double counted; the collector keeps the
refused batch in its spool's ``rejected`` table (HTTP 422). So a collector cut off from the store for
longer than the window has its spooled batches refused: choose the window longer than that.

Every step is set-based SQL in its own short transaction (a slice of :data:`SLICE` seconds of
deliveries, or one day of denials), so ingest on SQLite waits at most one slice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store, StoreError
from netpol_gen.store.upsert import dialect_insert, greatest, upsert

DAY = 86400.0
MIN_RETAIN = DAY  # shadow denials are per minute for a day: a shorter window would coarsen those
CLOCK_SKEW = 3600.0  # how far a collector's clock may be behind the store's
SLICE = 600.0  # seconds of deliveries pruned per transaction
KEPT_ID_LENGTH = 64  # file digests (sha256 hex): kept forever; collector interval ids are shorter
IDS_PRUNED_BEFORE = "batch_ids_pruned_before"
DENIALS_ROLLED_BEFORE = "denials_rolled_before"
COLLECT = "collect"  # the kind serve records batches under (store.batches.KIND)

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}


class StaleBatch(StoreError):
    """A collector batch older than the batch ids the store still holds: it may have been delivered."""


def parse_duration(text: str) -> float:
    """Seconds of ``30d``, ``12h``, ``90m``, ``45s``; StoreError (a one-line message) otherwise or below a day."""
    found = DURATION.match(text.strip())
    if found is None:
        raise StoreError("not a duration: use a number and s, m, h or d (e.g. 30d)", where=f"--retain {text}")
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds < MIN_RETAIN:
        raise StoreError("retain at least 1d (shadow denials keep minutes for a day)", where=f"--retain {text}")
    return seconds


@dataclass(frozen=True)
class PruneReport:
    batches: int  # collector batch rows summed into delivery_totals and deleted
    denials: int  # shadow denial rows merged into their day's row


def _meta(conn: Connection, key: str) -> float | None:
    found = conn.execute(sa.select(t.meta.c.value).where(t.meta.c.key == key)).scalar()
    return None if found is None else float(found)


def _set_meta(conn: Connection, key: str, value: float) -> None:
    upsert(conn, t.meta, [{"key": key, "value": repr(value)}], ["key"], lambda ex: {"value": ex.value})


def _locked(conn: Connection, key: str) -> float:
    """The watermark ``key``, its row locked until commit: two replicas' prunes run one after the other
    (the second then reads what the first committed), so no delivery is summed twice. SQLite has one
    writer anyway."""
    upsert(conn, t.meta, [{"key": key, "value": "0.0"}], ["key"])
    found = conn.execute(sa.select(t.meta.c.value).where(t.meta.c.key == key).with_for_update()).scalar_one()
    return float(found)


def _ensure_index(conn: Connection) -> None:
    """The index on ``imports.imported_at`` (a store created before retention has none)."""
    for index in t.imports.indexes:
        index.create(conn, checkfirst=True)


def _prunable(start: float, end: float) -> sa.ColumnElement[bool]:
    i = t.imports.c
    return sa.and_(i.imported_at >= start, i.imported_at < end, i.kind == COLLECT,
                   sa.func.length(i.content_hash) < KEPT_ID_LENGTH)


def prune_batch_ids(store: Store, cutoff: float) -> int:
    """Sum collector batch rows delivered before ``cutoff`` into ``delivery_totals`` and delete them."""
    i, d = t.imports.c, t.delivery_totals.c
    with store.transaction() as conn:
        _ensure_index(conn)
        start = conn.execute(sa.select(sa.func.min(i.imported_at)).where(_prunable(0.0, cutoff))).scalar()
    pruned = 0
    while start is not None and start < cutoff:
        end = min(start + SLICE, cutoff)
        with store.transaction() as conn:
            _set_meta(conn, IDS_PRUNED_BEFORE, max(end, _locked(conn, IDS_PRUNED_BEFORE)))
            totals = (sa.select(i.kind, i.source, sa.func.count(), sa.func.sum(i.flows), sa.func.max(i.imported_at))
                      .where(_prunable(start, end)).group_by(i.kind, i.source))
            insert = dialect_insert(conn, t.delivery_totals).from_select(
                ["kind", "source", "batches", "flows", "last_at"], totals)
            conn.execute(insert.on_conflict_do_update(index_elements=["kind", "source"], set_={
                "batches": d.batches + insert.excluded.batches, "flows": d.flows + insert.excluded.flows,
                "last_at": greatest(d.last_at, insert.excluded.last_at)}))
            pruned += conn.execute(sa.delete(t.imports).where(_prunable(start, end))).rowcount
        start = end
    return pruned


def roll_denials(store: Store, cutoff: float) -> int:
    """Merge the shadow denial rows of each day wholly before ``cutoff`` into one row per (set, edge, day).

    A row's ``last_seen`` lies in its bucket (minute, hour or day), so a day's rows are those last seen
    in it: a range on ``ix_shadow_denials_last_seen``."""
    d = t.shadow_denials.c
    last_day = cutoff // DAY * DAY
    with store.reading() as conn:
        done = _meta(conn, DENIALS_ROLLED_BEFORE)
        first = conn.execute(sa.select(sa.func.min(d.last_seen)).where(d.last_seen >= (done or 0.0))).scalar()
    merged = 0
    day = None if first is None else first // DAY * DAY
    while day is not None and day < last_day:
        with store.transaction() as conn:
            if _locked(conn, DENIALS_ROLLED_BEFORE) <= day:  # else another replica rolled it meanwhile
                merged += _roll_day(conn, day)
                _set_meta(conn, DENIALS_ROLLED_BEFORE, day + DAY)
        day += DAY
    return merged


def _roll_day(conn: Connection, day: float) -> int:
    """One set-based merge of day ``day``'s rows into the row keyed by the day's start (overwritten with
    the day's sums: it is one of the rows summed), then the other rows deleted."""
    d = t.shadow_denials.c
    in_day = sa.and_(d.last_seen >= day, d.last_seen < day + DAY)
    group = (d.set_id, d.edge_id)
    ranked = sa.select(
        d.set_id, d.edge_id, d.side, d.policies, d.src_ip, d.dst_ip,
        sa.func.sum(d.connections).over(partition_by=group).label("connections"),
        sa.func.min(d.first_seen).over(partition_by=group).label("first_seen"),
        sa.func.max(d.last_seen).over(partition_by=group).label("last_seen"),
        sa.func.row_number().over(partition_by=group, order_by=(d.last_seen.desc(), d.hour.desc())).label("rank"),
    ).where(in_day).subquery()
    latest = sa.select(ranked.c.set_id, ranked.c.edge_id, sa.literal(day, sa.Double), ranked.c.side,
                       ranked.c.policies, ranked.c.src_ip, ranked.c.dst_ip, ranked.c.connections,
                       ranked.c.first_seen, ranked.c.last_seen).where(ranked.c.rank == 1)
    columns = ["set_id", "edge_id", "hour", "side", "policies", "src_ip", "dst_ip", "connections", "first_seen",
               "last_seen"]
    insert = dialect_insert(conn, t.shadow_denials).from_select(columns, latest)
    conn.execute(insert.on_conflict_do_update(index_elements=["set_id", "edge_id", "hour"], set_={
        name: insert.excluded[name] for name in columns[3:]}))
    return int(conn.execute(sa.delete(t.shadow_denials).where(in_day, d.hour != day)).rowcount)


def prune(store: Store, retain: float, now: float) -> PruneReport:
    """Everything past ``now - retain``: batch ids rolled into totals, shadow denials into days."""
    cutoff = now - retain
    report = PruneReport(prune_batch_ids(store, cutoff), roll_denials(store, cutoff))
    if (report.batches or report.denials) and store.engine.dialect.name == "postgresql":
        _vacuum(store)
    return report


def _vacuum(store: Store) -> None:
    """Make the deleted rows' space reusable now (PostgreSQL): autovacuum waits for a fifth of a table
    to be dead, i.e. a sixth of a 30-day window, and the table grows meanwhile. Outside a transaction,
    as VACUUM must be; SQLite reuses freed pages by itself."""
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'VACUUM "{t.imports.name}", "{t.shadow_denials.name}"')


def newest(batch: Batch) -> float | None:
    """The newest timestamp a batch holds (its edges' last sightings, samples, DNS answers)."""
    times = [totals.last_seen for totals in batch.edges.values() if totals.last_seen is not None]
    times += [s.ts for totals in batch.edges.values() for s in totals.samples if s.ts is not None]
    times += [seen.last_seen for seen in batch.dns.values()]
    return max(times, default=None)


def check_fresh(conn: Connection, batches: Sequence[tuple[str, Batch]]) -> None:
    """StaleBatch for the first of ``batches`` (id, batch; ids just claimed by this transaction) that
    may be a redelivery of a batch whose id was pruned. Run after the claim: on PostgreSQL a claim
    waits for a concurrent prune of that id to commit, and this read then sees its cutoff."""
    pruned = _meta(conn, IDS_PRUNED_BEFORE)
    if pruned is None:
        return
    for batch_id, batch in batches:
        if len(batch_id) >= KEPT_ID_LENGTH or not (batch.edges or batch.dns):
            continue
        ts = newest(batch)
        if ts is None or ts < pruned + CLOCK_SKEW:
            raise StaleBatch("older than the batch ids this store keeps (serve --retain): it may have been "
                             "delivered before, so it is refused, not counted twice", where=f"batch {batch_id}")
