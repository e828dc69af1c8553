"""Delivering collector batches exactly once, however often they are retried, several per transaction.

Each batch carries an id chosen when it was cut. It is recorded in ``imports`` (as ``content_hash``,
kind ``collect``; the column that makes re-importing a file a no-op) in the same transaction as
the batch's edges: a batch written just before a crash, then delivered again from the spool, is
recognised and skipped. No new table, so no schema change.

Group commit: :func:`deliver_batches` writes a group of batches (what ``serve`` found queued) in one
transaction. Their ids are claimed first, by one ``INSERT .. ON CONFLICT DO NOTHING RETURNING`` in
id order: an id returned is this transaction's to write; an id delivered before (or being written
by another ``serve`` replica, whose transaction this one waits for) is not returned and its batch
is skipped. Claiming in id order means two replicas' transactions take those row locks in the same
order and cannot deadlock. The new batches are then written as one :func:`combined` batch: the
store ends as it would after writing them one by one, with one upsert per unique edge of the group
(collectors of one workload's nodes see the same edges) instead of one per edge per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch, DnsSeen, EdgeKey, EdgeTotals
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.identity import Identity
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store
from netpol_gen.store.retention import check_fresh
from netpol_gen.store.upsert import upsert_statement
from netpol_gen.store.writer import Known, write_cluster, write_edges

KIND = "collect"


@dataclass(frozen=True)
class Delivery:
    """One batch to deliver: its id, what it holds, and what else its transaction must do.

    ``then`` runs in the transaction after the group's batches are written, only when this batch is
    new there (recording its shadow denials)."""

    batch_id: str
    batch: Batch
    flows: int
    source: str
    cluster: Cluster | None = None
    then: Callable[[Connection], None] | None = None


@dataclass(frozen=True)
class Combined:
    """A group's batches as one: each edge once (with its key as first seen), DNS answers, names."""

    edges: list[tuple[EdgeKey, EdgeTotals]]
    dns: dict[tuple[str, str], DnsSeen]
    names: dict[Identity, set[str]]


def combined(batches: Sequence[Batch]) -> Combined:
    """One batch whose writing leaves the store as writing ``batches`` in order would: connections,
    counters and established counts add, times widen, each sample slot keeps its first writer's
    sample, a DNS answer keeps its last TTL, names unite.

    Edges are matched by their identities' keys (strings hash in C, an Identity's hash is Python);
    an edge's totals are copied only when a second batch adds to them, so the batches are never
    changed (a failed group is written again batch by batch)."""
    edges: dict[tuple[str, str, int, str], tuple[EdgeKey, EdgeTotals]] = {}
    copied: set[tuple[str, str, int, str]] = set()
    dns: dict[tuple[str, str], DnsSeen] = {}
    names: dict[Identity, set[str]] = {}
    for batch in batches:
        for key, totals in batch.edges.items():
            matched = (key[0].key, key[1].key, key[2], key[3])
            found = edges.get(matched)
            if found is None:
                edges[matched] = (key, totals)
                continue
            merged = found[1]
            if matched not in copied:
                merged = merged.copy()
                edges[matched] = (found[0], merged)
                copied.add(matched)
            merged.merge(totals)
            merged.samples.extend(totals.samples[len(merged.samples):])
            for source, count in totals.established.items():
                merged.established[source] = merged.established.get(source, 0) + count
        for answer, seen in batch.dns.items():
            known = dns.get(answer)
            dns[answer] = seen if known is None else DnsSeen(
                seen.ttl, min(known.first_seen, seen.first_seen), max(known.last_seen, seen.last_seen))
        for identity, learnt in batch.names.items():
            names.setdefault(identity, set()).update(learnt)
    return Combined(list(edges.values()), dns, names)


def claim(conn: Connection, deliveries: Sequence[Delivery], now: float | None = None) -> set[str]:
    """Record the ids of ``deliveries`` (in id order) as delivered at ``now``; the ids this transaction
    recorded, i.e. not delivered before."""
    now = time.time() if now is None else now
    rows = {d.batch_id: {"content_hash": d.batch_id, "source": d.source, "kind": KIND, "flows": d.flows,
                         "imported_at": now} for d in reversed(deliveries)}  # the first delivery of an id counts
    statement = upsert_statement(conn, t.imports, ["content_hash"])
    ordered = [rows[batch_id] for batch_id in sorted(rows)]
    return set(conn.execute(statement.values(ordered).returning(t.imports.c.content_hash)).scalars())


def deliver_batches(store: Store, deliveries: Sequence[Delivery], now: float | None = None,
                    known: Known | None = None) -> list[bool]:
    """Write ``deliveries`` in one transaction; per delivery, True when written, False when its id was
    delivered before (or earlier in this group). StaleBatch (nothing written) when a new one is older
    than the batch ids retention keeps (:func:`~netpol_gen.store.retention.check_fresh`). ``known``:
    what committed transactions wrote (:class:`~netpol_gen.store.writer.Known`), and where this
    transaction's is added once it committed."""
    try:
        written, learnt = _deliver(store, deliveries, now, known)
    except sa.exc.IntegrityError:
        if known is not None:
            known.forget()
        raise
    if known is not None and learnt is not None:
        known.add(learnt)
    return written


def _deliver(store: Store, deliveries: Sequence[Delivery], now: float | None,
             known: Known | None) -> tuple[list[bool], Known | None]:
    learnt = None
    with store.transaction() as conn:
        new = claim(conn, deliveries, now)
        written: list[bool] = []
        for delivery in deliveries:
            written.append(delivery.batch_id in new)
            new.discard(delivery.batch_id)
        fresh = [d for d, w in zip(deliveries, written, strict=True) if w]
        check_fresh(conn, [(d.batch_id, d.batch) for d in fresh])  # StaleBatch past a pruned id: all rolled back
        for delivery in fresh:
            if delivery.cluster is not None:
                write_cluster(conn, delivery.cluster)
        if fresh:
            group = combined([d.batch for d in fresh])
            learnt = write_edges(conn, group.edges, group.dns, group.names, known).learnt
        for delivery in fresh:
            if delivery.then is not None:
                delivery.then(conn)
    return written, learnt


def deliver_batch(store: Store, batch_id: str, batch: Batch, flows: int, source: str,
                  cluster: Cluster | None = None, then: Callable[[Connection], None] | None = None) -> bool:
    """Write ``batch`` (and ``cluster``, when given) in one transaction; False if it was delivered before.
    ``then`` runs in that transaction after the batch is written (recording its shadow denials)."""
    return deliver_batches(store, [Delivery(batch_id, batch, flows, source, cluster, then)])[0]
