"""Connection attempts never answered, per edge and minute: what was denied in force.

A collector marks a connection whose SYN it saw retransmitted without a SYN-ACK (``Flow.answered``;
``import --pcap`` does the same); the batch carries the count per edge (``EdgeTotals.unanswered``) and
the batch's transaction adds it to the edge's row of the bucket its connections were last seen in,
bucketed as shadow denials are (a minute over the last day, an hour before; :func:`roll_up` merges a
day-old hour's minutes), with the addresses of one of its connections (what ``watch`` names a node by).
Whether a policy dropped the attempt or the peer was down, the store cannot tell: ``watch`` lists the
edge under the policies in force with what those say, if anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import EdgeKey, EdgeTotals
from netpol_gen.store import schema as t
from netpol_gen.store.buckets import DETAIL, HOUR, bucket
from netpol_gen.store.upsert import greatest, least, upsert


@dataclass(frozen=True)
class Unanswered:
    """An edge's attempts never answered over the buckets read: the rows summed, addresses of the latest."""

    edge_id: int
    src_ip: str
    dst_ip: str
    attempts: int
    first_seen: float
    last_seen: float


def record_unanswered(conn: Connection, edges: Sequence[tuple[EdgeKey, EdgeTotals]], edge_ids: Sequence[int],
                      now: float | None = None) -> None:
    """Add the edges' unanswered attempts to their (edge, bucket) rows; ``edge_ids``: the edges', in order."""
    now = time.time() if now is None else now
    rows = []
    for edge_id, (_key, totals) in zip(edge_ids, edges, strict=True):
        if not totals.unanswered:
            continue
        last = totals.last_seen if totals.last_seen is not None else now
        sample = totals.samples[0] if totals.samples else None
        rows.append({"edge_id": edge_id, "minute": bucket(last, now), "attempts": totals.unanswered,
                     "src_ip": sample.src_ip if sample else "", "dst_ip": sample.dst_ip if sample else "",
                     "first_seen": totals.first_seen if totals.first_seen is not None else last, "last_seen": last})
    u = t.edge_unanswered.c
    upsert(conn, t.edge_unanswered, rows, ["edge_id", "minute"], lambda ex: {
        "attempts": u.attempts + ex.attempts, "src_ip": ex.src_ip, "dst_ip": ex.dst_ip,
        "first_seen": least(u.first_seen, ex.first_seen), "last_seen": greatest(u.last_seen, ex.last_seen),
    })


def read_unanswered(conn: Connection, since: float | None = None) -> dict[int, Unanswered]:
    """Per edge id, the attempts of the buckets last seen at or after ``since`` (all when None)."""
    if not sa.inspect(conn).has_table(t.edge_unanswered.name):  # an older store opened for reading
        return {}
    u = t.edge_unanswered.c
    query = sa.select(t.edge_unanswered).order_by(u.edge_id, u.last_seen)
    if since is not None:
        query = query.where(u.last_seen >= since)
    found: dict[int, Unanswered] = {}
    for row in conn.execute(query):
        before = found.get(row.edge_id)
        found[row.edge_id] = Unanswered(
            row.edge_id, row.src_ip, row.dst_ip, row.attempts + (before.attempts if before else 0),
            min(before.first_seen, row.first_seen) if before else row.first_seen, row.last_seen)
    return found


def roll_up(conn: Connection, now: float) -> int:
    """Merge the minute rows of every hour that left the detail window into that hour's row; returns
    the minute rows merged away."""
    u = t.edge_unanswered.c
    end = (now - DETAIL) // HOUR * HOUR
    rows = [row for row in conn.execute(sa.select(t.edge_unanswered).where(u.minute < end).order_by(u.last_seen))
            if row.minute % HOUR]
    merged: dict[tuple[int, float], dict[str, Any]] = {}
    for row in rows:
        key = (row.edge_id, row.minute // HOUR * HOUR)
        into = merged.setdefault(key, {"edge_id": key[0], "minute": key[1], "attempts": 0,
                                       "first_seen": row.first_seen, "last_seen": row.last_seen})
        into.update(src_ip=row.src_ip, dst_ip=row.dst_ip, attempts=into["attempts"] + row.attempts,
                    first_seen=min(into["first_seen"], row.first_seen), last_seen=max(into["last_seen"], row.last_seen))
        conn.execute(sa.delete(t.edge_unanswered).where(u.edge_id == row.edge_id, u.minute == row.minute))
    upsert(conn, t.edge_unanswered, list(merged.values()), ["edge_id", "minute"], lambda ex: {
        "attempts": u.attempts + ex.attempts, "first_seen": least(u.first_seen, ex.first_seen),
        "last_seen": greatest(u.last_seen, ex.last_seen)})
    return len(rows)
