"""Writing to the store inside a caller's transaction: cluster objects and aggregated batches.

Every write is an upsert keyed on a natural key, so writing the same cluster view again changes
nothing and a batch adds to the edges it touches. Callers own the transaction: a failure anywhere
rolls back everything written for that import or collector batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch, EdgeKey
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.identity import Identity
from netpol_gen.store import schema as t
from netpol_gen.store.cluster_view import stamp_revision
from netpol_gen.store.unanswered import record_unanswered
from netpol_gen.store.upsert import add_nullable, greatest, least, upsert

_CHUNK = 500  # bound parameters per IN (...) lookup; SQLite allows 32766, PostgreSQL 65535
_T = TypeVar("_T")


@dataclass(frozen=True)
class WriteResult:
    edges_new: int
    edges_updated: int
    dns_answers: int


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def identity_ids(conn: Connection, identities: Iterable[Identity]) -> dict[Identity, int]:
    """Ids of ``identities``, inserting those the store does not know yet."""
    wanted = {identity.key: identity for identity in identities}
    upsert(
        conn,
        t.identities,
        [
            {"key": key, "kind": i.kind.value, "namespace": i.namespace, "workload_kind": i.workload_kind,
             "workload_name": i.workload_name, "node": i.node, "ip": i.ip}
            for key, i in wanted.items()
        ],
        ["key"],
    )
    ids: dict[Identity, int] = {}
    for chunk in _chunks(list(wanted)):
        for key, ident in conn.execute(sa.select(t.identities.c.key, t.identities.c.id)
                                       .where(t.identities.c.key.in_(chunk))):
            ids[wanted[key]] = ident
    return ids


def write_cluster(conn: Connection, cluster: Cluster) -> None:
    """Namespaces, nodes, Services, the API server's addresses and every pod IP (with its identity) as this
    cluster view has them."""
    upsert(conn, t.namespaces, [{"name": ns.name, "labels": dict(ns.labels)} for ns in cluster.namespaces.values()],
           ["name"], lambda ex: {"labels": ex.labels})
    upsert(conn, t.nodes,
           [{"name": n.name, "addresses": list(n.addresses), "pod_cidrs": list(n.pod_cidrs)} for n in cluster.nodes],
           ["name"], lambda ex: {"addresses": ex.addresses, "pod_cidrs": ex.pod_cidrs})
    upsert(conn, t.services, [
        {"namespace": s.namespace, "name": s.name, "type": s.type,
         "selector": dict(s.selector) if s.selector is not None else None,
         "cluster_ips": list(s.cluster_ips), "external_ips": list(s.external_ips)}
        for s in cluster.services
    ], ["namespace", "name"], lambda ex: {"type": ex.type, "selector": ex.selector, "cluster_ips": ex.cluster_ips,
                                          "external_ips": ex.external_ips})
    upsert(conn, t.service_ports, [
        {"namespace": s.namespace, "service": s.name, "port": p.port, "protocol": p.protocol, "name": p.name,
         "target_port": None if p.target_port is None else str(p.target_port), "node_port": p.node_port}
        for s in cluster.services for p in s.ports
    ], ["namespace", "service", "port", "protocol"],
        lambda ex: {"name": ex.name, "target_port": ex.target_port, "node_port": ex.node_port})
    upsert(conn, t.api_servers, [{"address": ip} for ip in sorted(cluster.api_servers)], ["address"])
    pods = [pod for pod in cluster.pods if pod.ips]
    ids = identity_ids(conn, (Identity.of_pod(pod) for pod in pods))
    upsert(conn, t.endpoints, [
        {"pod_uid": pod.uid, "ip": ip, "identity_id": ids[Identity.of_pod(pod)], "namespace": pod.namespace,
         "name": pod.name, "labels": dict(pod.labels), "workload_kind": pod.workload.kind,
         "workload_name": pod.workload.name, "node": pod.node_name, "host_network": pod.host_network,
         "container_ports": [{"port": c.port, "protocol": c.protocol, "name": c.name} for c in pod.container_ports],
         "valid_from": pod.created, "valid_to": pod.ended}
        for pod in pods for ip in pod.ips
    ], ["pod_uid", "ip"], lambda ex: {
        "labels": ex.labels, "node": ex.node, "container_ports": ex.container_ports,
        "valid_from": least(t.endpoints.c.valid_from, ex.valid_from),
        "valid_to": sa.func.coalesce(ex.valid_to, t.endpoints.c.valid_to),
    })
    stamp_revision(conn)


def _write_evidence(conn: Connection, batch: Batch, edge_ids: dict[EdgeKey, int]) -> None:
    """The samples of the batch's edges and their connections learnt from tables of open connections."""
    # Slots 0..n-1 per batch, first writer wins: an edge keeps at most SAMPLES_PER_EDGE samples ever.
    upsert(conn, t.edge_samples, [
        {"edge_id": edge_ids[key], "slot": slot, "ts": s.ts, "src_ip": s.src_ip, "src_port": s.src_port,
         "dst_ip": s.dst_ip, "dst_port": s.dst_port, "src_pod_uid": s.src_pod_uid, "dst_pod_uid": s.dst_pod_uid,
         "service": s.service, "packets": s.packets, "bytes": s.bytes}
        for key, totals in batch.edges.items() for slot, s in enumerate(totals.samples)
    ], ["edge_id", "slot"])
    upsert(conn, t.edge_established, [
        {"edge_id": edge_ids[key], "source": source, "connections": count}
        for key, totals in batch.edges.items() for source, count in totals.established.items()
    ], ["edge_id", "source"], lambda ex: {"connections": t.edge_established.c.connections + ex.connections})


def write_batch(conn: Connection, batch: Batch) -> WriteResult:
    """Add ``batch`` to the store: one upsert per unique edge, samples up to each edge's bound."""
    ids = identity_ids(conn, {i for key in batch.edges for i in key[:2]} | set(batch.names))
    rows: list[dict[str, Any]] = []
    by_ids: dict[tuple[int, int, int, str], EdgeKey] = {}
    for key, totals in batch.edges.items():
        src, dst, port, protocol = key
        id_key = (ids[src], ids[dst], port, protocol)
        by_ids[id_key] = key
        rows.append({"src_id": id_key[0], "dst_id": id_key[1], "dst_port": port, "protocol": protocol,
                     "connections": totals.connections, "packets": totals.packets, "bytes": totals.bytes,
                     "first_seen": totals.first_seen, "last_seen": totals.last_seen})
    e = t.edges.c
    before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.id), 0))).scalar_one()
    # The upsert returns every row's id, so no lookup follows (a lookup by source identity reads all of
    # that identity's edges, which grows with the store). A row inserted now has an id above any before.
    stored = upsert(conn, t.edges, rows, ["src_id", "dst_id", "dst_port", "protocol"], lambda ex: {
        "connections": e.connections + ex.connections,
        "packets": add_nullable(e.packets, ex.packets),
        "bytes": add_nullable(e.bytes, ex.bytes),
        "first_seen": least(e.first_seen, ex.first_seen),
        "last_seen": greatest(e.last_seen, ex.last_seen),
    }, returning=(e.src_id, e.dst_id, e.dst_port, e.protocol, e.id))
    edge_ids = {by_ids[(row.src_id, row.dst_id, row.dst_port, row.protocol)]: row.id for row in stored}
    new = sum(edge_id > before for edge_id in edge_ids.values())
    _write_evidence(conn, batch, edge_ids)
    record_unanswered(conn, batch, edge_ids)
    upsert(conn, t.dns_answers, [
        {"name": name, "address": address, "ttl": seen.ttl, "first_seen": seen.first_seen,
         "last_seen": seen.last_seen}
        for (name, address), seen in batch.dns.items()
    ], ["name", "address"], lambda ex: {
        "ttl": ex.ttl,
        "first_seen": least(t.dns_answers.c.first_seen, ex.first_seen),
        "last_seen": greatest(t.dns_answers.c.last_seen, ex.last_seen),
    })
    upsert(conn, t.identity_names,
           [{"identity_id": ids[identity], "name": name} for identity, names in batch.names.items() for name in names],
           ["identity_id", "name"])
    return WriteResult(edges_new=new, edges_updated=len(rows) - new, dns_answers=len(batch.dns))
