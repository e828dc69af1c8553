"""Shadow sets in the store: the named policy sets, and the connections each would have denied.

A set is kept as the policy documents it was added with (validated before by the evaluator's
parsers, see :mod:`netpol_gen.service.shadow`), so any process, after any restart, judges with the
same set. Denials are kept per (set, edge, bucket the connections were last seen in), never per flow:
a batch adds its denied connections of an edge to that bucket's row. Buckets are minutes for the last
:data:`DETAIL` seconds and hours before (:func:`roll_up` merges a day-old hour's minutes into one row,
keyed by the hour's start, as its minute 0 was), so ``watch --since 10m`` counts the last ten minutes,
give or take the minute ``since`` falls in, while an edge denied all month costs a row per hour. (The
key column is still called ``hour``: renaming it would change the schema for nothing.) Everything here
runs inside the caller's transaction (recording) or a read; it knows nothing of policy semantics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.names import IN_FORCE, UNKNOWN_SIDE
from netpol_gen.store import schema as t
from netpol_gen.store.buckets import DETAIL, HOUR, bucket
from netpol_gen.store.db import Store, StoreError
from netpol_gen.store.unanswered import read_unanswered
from netpol_gen.store.upsert import greatest, least, upsert

ROLL_BACK = 7 * 86400.0  # how far behind the detail window roll_up looks (a store that was down that long)
SIDES = ("egress", "ingress", "both")


class ShadowSetError(StoreError):
    """A shadow set name that is taken, unknown, or not a name."""


@dataclass(frozen=True)
class ShadowSet:
    """A set as ``shadow list`` shows it."""

    name: str
    source: str  # the file or directory it was read from
    policies: int
    added_at: float


@dataclass(frozen=True)
class StoredSet:
    """A set with its documents, for judging; ``id`` and ``added_at`` tell a replaced set from the old one."""

    id: int
    name: str
    added_at: float
    documents: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Denial:
    """Connections of one edge of a batch that one set denies, as the judge found them."""

    set_id: int
    src: Identity
    dst: Identity
    port: int
    protocol: str
    side: str  # egress | ingress | both
    policies: tuple[str, ...]  # ns/name of the policies on the denying side(s)
    src_ip: str
    dst_ip: str
    connections: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class DeniedEdge:
    """One line of ``watch``: an edge a set denies, over the hours asked for. Field names are a contract."""

    set: str
    src: str  # <ns>/<Kind>/<name> for a workload, the address otherwise
    dst: str
    port: int
    protocol: str
    side: str
    policies: tuple[str, ...]
    first_seen: float
    last_seen: float
    connections: int
    unanswered: int = 0  # attempts never answered (set in-force only): denied in force, not only would be


@dataclass(frozen=True)
class DeniedTotal:
    """Connections a set denies on one workload's side: the ``netpol_gen_denied_connections_total`` series."""

    set: str
    namespace: str
    workload: str  # Kind/name
    direction: str  # egress | ingress
    connections: int


def has_tables(conn: Connection) -> bool:
    """Whether this store has the shadow tables (an older store opened only for reading may not)."""
    return sa.inspect(conn).has_table(t.shadow_sets.name)


def add_set(store: Store, name: str, source: str, documents: Sequence[dict[str, Any]]) -> ShadowSet:
    """Record set ``name``; ShadowSetError when the name is taken (remove it first)."""
    added = time.time()
    with store.transaction() as conn:
        taken = conn.execute(sa.select(t.shadow_sets.c.id).where(t.shadow_sets.c.name == name)).first()
        if taken is not None:
            raise ShadowSetError("a shadow set of this name exists; remove it first", where=f"shadow set {name}")
        conn.execute(sa.insert(t.shadow_sets).values(name=name, source=source, documents=list(documents),
                                                     added_at=added))
    return ShadowSet(name, source, len(documents), added)


def replace_set(store: Store, name: str, source: str, documents: Sequence[dict[str, Any]]) -> bool:
    """Make set ``name`` hold ``documents`` (adding it when missing), keeping what it denied so far;
    False when it held them already. For sets kept in step with a source (the policies in force, a
    watched directory or ConfigMap): its ``added_at`` moves on, so every judge reloads it."""
    s = t.shadow_sets.c
    with store.transaction() as conn:
        found = conn.execute(sa.select(s.id, s.source, s.documents).where(s.name == name)).first()
        if found is not None and found.documents == list(documents) and found.source == source:
            return False
        values = {"source": source, "documents": list(documents), "added_at": time.time()}
        if found is None:
            conn.execute(sa.insert(t.shadow_sets).values(name=name, **values))
        else:
            conn.execute(sa.update(t.shadow_sets).where(s.id == found.id).values(**values))
    return True


def remove_set(store: Store, name: str) -> None:
    """Forget set ``name`` and what it denied; ShadowSetError when there is none."""
    s = t.shadow_sets.c
    with store.transaction() as conn:
        found = conn.execute(sa.select(s.id).where(s.name == name)).scalar()
        if found is None:
            raise ShadowSetError("no shadow set of this name", where=f"shadow set {name}")
        conn.execute(sa.delete(t.shadow_denials).where(t.shadow_denials.c.set_id == found))
        conn.execute(sa.delete(t.shadow_sets).where(s.id == found))


def list_sets(conn: Connection) -> list[ShadowSet]:
    if not has_tables(conn):
        return []
    s = t.shadow_sets.c
    return [ShadowSet(row.name, row.source, len(row.documents), row.added_at)
            for row in conn.execute(sa.select(s.name, s.source, s.documents, s.added_at).order_by(s.name))]


def set_versions(conn: Connection) -> dict[int, float]:
    """Per set id its ``added_at``: a cheap look before each batch at whether the sets changed."""
    s = t.shadow_sets.c
    return {row.id: row.added_at for row in conn.execute(sa.select(s.id, s.added_at))}


def load_sets(conn: Connection, ids: Iterable[int]) -> list[StoredSet]:
    s = t.shadow_sets.c
    return [StoredSet(row.id, row.name, row.added_at, tuple(row.documents))
            for row in conn.execute(sa.select(t.shadow_sets).where(s.id.in_(list(ids))).order_by(s.id))]


def record_denials(conn: Connection, denials: Sequence[Denial], now: float | None = None) -> None:
    """Add ``denials`` to their (set, edge, bucket) rows. The edges are the batch's, written in this
    transaction just before; a set removed meanwhile has its denials dropped."""
    if not denials:
        return
    now = time.time() if now is None else now
    i, e = t.identities.c, t.edges.c
    keys = {identity.key for d in denials for identity in (d.src, d.dst)}
    ids: dict[str, int] = {row.key: row.id for row in conn.execute(sa.select(i.key, i.id).where(i.key.in_(keys)))}
    wanted = {(ids[d.src.key], ids[d.dst.key], d.port, d.protocol) for d in denials}
    edge_ids = {(row.src_id, row.dst_id, row.dst_port, row.protocol): row.id for row in conn.execute(
        sa.select(e.id, e.src_id, e.dst_id, e.dst_port, e.protocol).where(e.src_id.in_({k[0] for k in wanted})))}
    live = set(set_versions(conn))
    rows = [
        {"set_id": d.set_id, "edge_id": edge_ids[(ids[d.src.key], ids[d.dst.key], d.port, d.protocol)],
         "hour": bucket(d.last_seen, now), "side": d.side, "policies": list(d.policies), "src_ip": d.src_ip,
         "dst_ip": d.dst_ip, "connections": d.connections, "first_seen": d.first_seen, "last_seen": d.last_seen}
        for d in denials if d.set_id in live
    ]
    c = t.shadow_denials.c
    upsert(conn, t.shadow_denials, rows, ["set_id", "edge_id", "hour"], lambda ex: {
        "side": ex.side, "policies": ex.policies, "src_ip": ex.src_ip, "dst_ip": ex.dst_ip,
        "connections": c.connections + ex.connections,
        "first_seen": least(c.first_seen, ex.first_seen),
        "last_seen": greatest(c.last_seen, ex.last_seen),
    })


def roll_up(conn: Connection, now: float) -> int:
    """Merge the minute rows of every hour that left the detail window into that hour's row (its start);
    the side and policies of the latest minute. Returns the minute rows merged away."""
    d = t.shadow_denials.c
    end = (now - DETAIL) // HOUR * HOUR  # hours wholly before the window
    rows = [row for row in conn.execute(sa.select(t.shadow_denials).where(d.hour >= end - ROLL_BACK, d.hour < end)
                                        .order_by(d.set_id, d.edge_id, d.last_seen))
            if row.hour % HOUR]
    if not rows:
        return 0
    merged: dict[tuple[int, int, float], dict[str, Any]] = {}
    for row in rows:
        key = (row.set_id, row.edge_id, row.hour // HOUR * HOUR)
        into = merged.setdefault(key, {"set_id": key[0], "edge_id": key[1], "hour": key[2], "connections": 0,
                                       "first_seen": row.first_seen, "last_seen": row.last_seen})
        into.update(side=row.side, policies=row.policies, src_ip=row.src_ip, dst_ip=row.dst_ip,
                    connections=into["connections"] + row.connections,
                    first_seen=min(into["first_seen"], row.first_seen), last_seen=max(into["last_seen"], row.last_seen))
    for row in rows:
        conn.execute(sa.delete(t.shadow_denials).where(d.set_id == row.set_id, d.edge_id == row.edge_id,
                                                       d.hour == row.hour))
    upsert(conn, t.shadow_denials, list(merged.values()), ["set_id", "edge_id", "hour"], lambda ex: {
        "connections": d.connections + ex.connections,
        "first_seen": least(d.first_seen, ex.first_seen),
        "last_seen": greatest(d.last_seen, ex.last_seen),
        "side": sa.case((ex.last_seen >= d.last_seen, ex.side), else_=d.side),
        "policies": sa.case((ex.last_seen >= d.last_seen, ex.policies), else_=d.policies),
    })
    return len(rows)


def _name(row: Any, prefix: str, ip: str) -> str:
    m = row._mapping
    if m[f"{prefix}kind"] == IdentityKind.POD.value:
        return f"{m[f'{prefix}namespace']}/{m[f'{prefix}workload_kind']}/{m[f'{prefix}workload_name']}"
    return ip


def _denial_rows(conn: Connection, set_name: str | None, since: float | None) -> Any:
    sets, d, e = t.shadow_sets.c, t.shadow_denials.c, t.edges.c
    src, dst = t.identities.alias("src"), t.identities.alias("dst")
    columns = [alias.c[name].label(f"{prefix}{name}") for alias, prefix in ((src, "src_"), (dst, "dst_"))
               for name in ("kind", "namespace", "workload_kind", "workload_name")]
    query = (
        sa.select(sets.name.label("set_name"), d.edge_id, d.side, d.policies, d.src_ip, d.dst_ip, d.connections,
                  d.first_seen, d.last_seen, e.dst_port, e.protocol, *columns)
        .join_from(t.shadow_denials, t.shadow_sets, d.set_id == sets.id)
        .join(t.edges, e.id == d.edge_id)
        .join(src, src.c.id == e.src_id)
        .join(dst, dst.c.id == e.dst_id)
        .order_by(sets.name, d.edge_id, d.last_seen)
    )
    if set_name is not None:
        query = query.where(sets.name == set_name)
    if since is not None:
        query = query.where(d.last_seen >= since)
    return conn.execute(query)


def _edge_ends(conn: Connection, edge_ids: Iterable[int]) -> dict[int, Any]:
    """Per edge id, its port, protocol and both ends' identity columns (as :func:`_denial_rows` labels them)."""
    e = t.edges.c
    src, dst = t.identities.alias("src"), t.identities.alias("dst")
    columns = [alias.c[name].label(f"{prefix}{name}") for alias, prefix in ((src, "src_"), (dst, "dst_"))
               for name in ("kind", "namespace", "workload_kind", "workload_name")]
    query = (sa.select(e.id, e.dst_port, e.protocol, *columns).join_from(t.edges, src, src.c.id == e.src_id)
             .join(dst, dst.c.id == e.dst_id).where(e.id.in_(list(edge_ids))))
    return {row.id: row for row in conn.execute(query)}


def _with_unanswered(conn: Connection, found: dict[tuple[str, int], DeniedEdge], since: float | None) -> None:
    """Add the attempts never answered to set in-force's edges; an edge it does not deny (or a store
    without it) is listed under it with side ``unknown``: dropped by what is enforced, or by a dead peer."""
    attempts = read_unanswered(conn, since)
    ends = _edge_ends(conn, [edge_id for edge_id in attempts if (IN_FORCE, edge_id) not in found])
    for edge_id, seen in attempts.items():
        before = found.get((IN_FORCE, edge_id))
        if before is not None:
            found[(IN_FORCE, edge_id)] = replace(before, unanswered=seen.attempts,
                                                 first_seen=min(before.first_seen, seen.first_seen),
                                                 last_seen=max(before.last_seen, seen.last_seen))
        elif edge_id in ends:
            row = ends[edge_id]
            found[(IN_FORCE, edge_id)] = DeniedEdge(
                IN_FORCE, _name(row, "src_", seen.src_ip), _name(row, "dst_", seen.dst_ip), row.dst_port,
                row.protocol, UNKNOWN_SIDE, (), seen.first_seen, seen.last_seen, seen.attempts, seen.attempts)


def denied_edges(conn: Connection, set_name: str | None = None, since: float | None = None) -> list[DeniedEdge]:
    """Per set and edge, the denials of the buckets last seen at or after ``since`` (to the minute over
    the detail window, to the hour before it), summed; the side and policies of the latest; for set
    in-force also the attempts never answered. Ordered by when each edge was first denied."""
    found: dict[tuple[str, int], DeniedEdge] = {}
    for row in _denial_rows(conn, set_name, since) if has_tables(conn) else ():
        key = (row.set_name, row.edge_id)
        before = found.get(key)
        found[key] = DeniedEdge(
            row.set_name, _name(row, "src_", row.src_ip), _name(row, "dst_", row.dst_ip), row.dst_port, row.protocol,
            row.side, tuple(row.policies),
            row.first_seen if before is None else min(before.first_seen, row.first_seen),
            row.last_seen, row.connections + (before.connections if before is not None else 0))
    if set_name in (None, IN_FORCE):
        _with_unanswered(conn, found, since)
    return sorted(found.values(), key=lambda edge: (edge.first_seen, edge.set, edge.src, edge.dst, edge.port))


def denied_totals(conn: Connection) -> list[DeniedTotal]:
    """Connections denied per set, workload on the denying side, and direction (both sides count twice)."""
    if not has_tables(conn):
        return []
    totals: dict[tuple[str, str, str, str], int] = {}
    for row in _denial_rows(conn, None, None):
        for direction, prefix in (("egress", "src_"), ("ingress", "dst_")):
            if row.side in (direction, "both"):
                m = row._mapping
                key = (row.set_name, m[f"{prefix}namespace"] or "",
                       f"{m[f'{prefix}workload_kind']}/{m[f'{prefix}workload_name']}", direction)
                totals[key] = totals.get(key, 0) + row.connections
    return [DeniedTotal(*key, connections) for key, connections in sorted(totals.items())]
