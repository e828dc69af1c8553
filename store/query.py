"""Reading aggregated edges back, workload-level, for ``netpol-gen flows`` and the synthesizer."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.listings import EdgeRow
from netpol_gen.store import schema as t
from netpol_gen.store.sound import report_unsound, sound_edge
from netpol_gen.store.unanswered import read_unanswered


def _identity(row: sa.Row[tuple[object, ...]], prefix: str) -> Identity:
    m = row._mapping
    return Identity(IdentityKind(m[f"{prefix}kind"]), m[f"{prefix}namespace"], m[f"{prefix}workload_kind"],
                    m[f"{prefix}workload_name"], m[f"{prefix}node"], m[f"{prefix}ip"])


def _identity_columns(alias: sa.FromClause, prefix: str) -> list[sa.Label[object]]:
    return [alias.c[name].label(f"{prefix}{name}")
            for name in ("kind", "namespace", "workload_kind", "workload_name", "node", "ip")]


def list_edges(conn: Connection, namespace: str | None = None) -> list[EdgeRow]:
    """All edges (those with an end in ``namespace`` when given), busiest first."""
    src, dst, e = t.identities.alias("src"), t.identities.alias("dst"), t.edges.c
    query = (
        sa.select(e.id, e.dst_id, e.dst_port, e.protocol, e.connections, e.packets, e.bytes, e.first_seen, e.last_seen,
                  *_identity_columns(src, "src_"), *_identity_columns(dst, "dst_"))
        .join_from(t.edges, src, e.src_id == src.c.id)
        .join(dst, e.dst_id == dst.c.id)
        .where(sound_edge())
        .order_by(e.connections.desc(), src.c.key, dst.c.key, e.dst_port, e.protocol)
    )
    report_unsound(conn, t.edges, sound_edge())
    if namespace is not None:
        query = query.where(sa.or_(src.c.namespace == namespace, dst.c.namespace == namespace))
    names: dict[int, list[str]] = defaultdict(list)
    for identity_id, name in conn.execute(
        sa.select(t.identity_names.c.identity_id, t.identity_names.c.name).order_by(t.identity_names.c.name)
    ):
        names[identity_id].append(name)
    established, unanswered = read_established(conn), read_unanswered(conn)
    return [
        EdgeRow(_identity(row, "src_"), _identity(row, "dst_"), row.dst_port, row.protocol, row.connections,
                row.packets, row.bytes, row.first_seen, row.last_seen, tuple(names.get(row.dst_id, ())),
                established.get(row.id, ()), unanswered[row.id].attempts if row.id in unanswered else 0)
        for row in conn.execute(query)
    ]


def read_established(conn: Connection) -> dict[int, tuple[tuple[str, int], ...]]:
    """Per edge id: connections learnt from tables of open connections, by source (sorted)."""
    table = t.edge_established
    found: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for edge_id, source, count in conn.execute(
            sa.select(table.c.edge_id, table.c.source, table.c.connections).order_by(table.c.edge_id, table.c.source)):
        found[edge_id].append((source, int(count)))
    return {edge_id: tuple(rows) for edge_id, rows in found.items()}
