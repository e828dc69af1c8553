"""Writing to the store inside a caller's transaction: cluster objects and aggregated batches.

Every write is an upsert keyed on a natural key, so writing the same cluster view again changes
nothing and a batch adds to the edges it touches. Callers own the transaction: a failure anywhere
rolls back everything written for that import or collector batch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch, DnsSeen, EdgeKey, EdgeTotals
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.identity import Identity
from netpol_gen.store import schema as t
from netpol_gen.store.revision import stamp_revision
from netpol_gen.store.unanswered import record_unanswered
from netpol_gen.store.upsert import Prepared, add_nullable, greatest, least, upsert

_CHUNK = 500  # bound parameters per IN (...) lookup; SQLite allows 32766, PostgreSQL 65535
_T = TypeVar("_T")


@dataclass(frozen=True)
class WriteResult:
    edges_new: int
    edges_updated: int
    dns_answers: int
    learnt: Known | None = None  # what later writes need not write again, once this one committed


@dataclass
class Known:
    """What committed transactions wrote that later ones need not write again: identity ids by key (an
    identity row is never deleted nor renumbered) and, per edge id, how many sample slots are filled
    (slots are only ever filled, first writer wins). Once learning settles, a batch's identities need
    no upsert and no lookup and its samples no insert; any replica may have written them. Forgotten
    whole past :data:`LIMIT` entries, or when the database refuses a write (a store emptied under a
    running ``serve``)."""

    ids: dict[str, int] = field(default_factory=dict)
    slots: dict[int, int] = field(default_factory=dict)

    LIMIT = 1 << 19

    def add(self, learnt: Known) -> None:
        if len(self.ids) + len(learnt.ids) > self.LIMIT:
            self.ids.clear()
        if len(self.slots) + len(learnt.slots) > self.LIMIT:
            self.slots.clear()
        self.ids.update(learnt.ids)
        self.slots.update(learnt.slots)

    def forget(self) -> None:
        self.ids.clear()
        self.slots.clear()


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


def _edge_updates(ex: Any) -> dict[str, Any]:
    e = t.edges.c
    return {"connections": e.connections + ex.connections, "packets": add_nullable(e.packets, ex.packets),
            "bytes": add_nullable(e.bytes, ex.bytes), "first_seen": least(e.first_seen, ex.first_seen),
            "last_seen": greatest(e.last_seen, ex.last_seen)}


def _dns_updates(ex: Any) -> dict[str, Any]:
    d = t.dns_answers.c
    return {"ttl": ex.ttl, "first_seen": least(d.first_seen, ex.first_seen),
            "last_seen": greatest(d.last_seen, ex.last_seen)}


_EDGE_KEY = ("src_id", "dst_id", "dst_port", "protocol")
_EDGE_OF = operator.itemgetter(0, 1, 2, 3)  # the edge key of a row of edges (as written, as returned)
_ID_OF = operator.itemgetter(4)  # the id of a row returned
_IDENTITIES = Prepared(t.identities, ("key", "kind", "namespace", "workload_kind", "workload_name", "node", "ip"),
                       ("key",))
# The upsert returns every row's id, so no lookup follows (a lookup by source identity reads all of
# that identity's edges, which grows with the store). A row inserted now has an id above any before.
_EDGES = Prepared(t.edges, (*_EDGE_KEY, "connections", "packets", "bytes", "first_seen", "last_seen"), _EDGE_KEY,
                  _edge_updates, returning=(*_EDGE_KEY, "id"))
# Slots 0..n-1 per batch, first writer wins: an edge keeps at most SAMPLES_PER_EDGE samples ever.
_SAMPLES = Prepared(t.edge_samples, ("edge_id", "slot", "ts", "src_ip", "src_port", "dst_ip", "dst_port",
                                     "src_pod_uid", "dst_pod_uid", "service", "packets", "bytes"), ("edge_id", "slot"))
_ESTABLISHED = Prepared(t.edge_established, ("edge_id", "source", "connections"), ("edge_id", "source"),
                        lambda ex: {"connections": t.edge_established.c.connections + ex.connections})
_DNS = Prepared(t.dns_answers, ("name", "address", "ttl", "first_seen", "last_seen"), ("name", "address"),
                _dns_updates)
_NAMES = Prepared(t.identity_names, ("identity_id", "name"), ("identity_id", "name"))


def _ids_by_key(conn: Connection, wanted: Mapping[str, Identity], known: Mapping[str, int]) -> dict[str, int]:
    """Ids of ``wanted`` (by key): those in ``known`` as they are, the others upserted and read."""
    ids = {key: known[key] for key in wanted if key in known}
    missing = [key for key in wanted if key not in ids]
    if not missing:
        return ids
    _IDENTITIES.run(conn, [(key, i.kind.value, i.namespace, i.workload_kind, i.workload_name, i.node, i.ip)
                           for key in missing for i in (wanted[key],)])
    for chunk in _chunks(missing):
        rows = conn.execute(sa.select(t.identities.c.key, t.identities.c.id).where(t.identities.c.key.in_(chunk)))
        ids.update((key, ident) for key, ident in rows)
    return ids


def _write_evidence(conn: Connection, edges: Sequence[tuple[EdgeKey, EdgeTotals]], edge_ids: Sequence[int],
                    filled: Mapping[int, int]) -> dict[int, int]:
    """The samples of the edges (``edge_ids`` in their order) in slots past those ``filled`` before, and
    their connections learnt from tables of open connections; per edge whose slots this filled, how
    many are filled now. One pass over the edges: it runs for every edge of every group serve writes."""
    samples: list[tuple[Any, ...]] = []
    established: list[tuple[int, str, int]] = []
    slots: dict[int, int] = {}
    for edge_id, (_key, totals) in zip(edge_ids, edges, strict=True):
        kept, before = totals.samples, filled.get(edge_id, 0)
        if len(kept) > before:
            slots[edge_id] = len(kept)
            samples.extend((edge_id, slot, s.ts, s.src_ip, s.src_port, s.dst_ip, s.dst_port, s.src_pod_uid,
                            s.dst_pod_uid, s.service, s.packets, s.bytes)
                           for slot, s in enumerate(kept[before:], before))
        if totals.established:
            established.extend((edge_id, source, count) for source, count in totals.established.items())
    _SAMPLES.run(conn, samples)
    _ESTABLISHED.run(conn, established)
    return slots


def write_batch(conn: Connection, batch: Batch, known: Known | None = None) -> WriteResult:
    """Add ``batch`` to the store: one upsert per unique edge, samples up to each edge's bound."""
    return write_edges(conn, list(batch.edges.items()), batch.dns, batch.names, known)


def write_edges(conn: Connection, edges: Sequence[tuple[EdgeKey, EdgeTotals]], dns: Mapping[tuple[str, str], DnsSeen],
                names: Mapping[Identity, Iterable[str]], known: Known | None = None) -> WriteResult:
    """:func:`write_batch` of a batch's parts (``edges`` each key once); ``known``: what committed
    transactions wrote (not written again)."""
    known = known or Known()
    wanted: dict[str, Identity] = {}
    for (src, dst, _port, _protocol), _totals in edges:
        wanted[src.key] = src
        wanted[dst.key] = dst
    wanted.update((identity.key, identity) for identity in names)
    ids = _ids_by_key(conn, wanted, known.ids)
    rows = [(ids[src.key], ids[dst.key], port, protocol, totals.connections, totals.packets, totals.bytes,
             totals.first_seen, totals.last_seen) for (src, dst, port, protocol), totals in edges]
    before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.edges.c.id), 0))).scalar_one()
    returned = _EDGES.run(conn, rows)
    stored = dict(zip(map(_EDGE_OF, returned), map(_ID_OF, returned), strict=True))
    edge_ids = list(map(stored.__getitem__, map(_EDGE_OF, rows)))
    slots = _write_evidence(conn, edges, edge_ids, known.slots)
    record_unanswered(conn, edges, edge_ids)
    _DNS.run(conn, [(name, address, seen.ttl, seen.first_seen, seen.last_seen)
                    for (name, address), seen in dns.items()])
    _NAMES.run(conn, [(ids[identity.key], name) for identity, learnt in names.items() for name in learnt])
    new = sum(edge_id > before for edge_id in stored.values())
    return WriteResult(edges_new=new, edges_updated=len(rows) - new, dns_answers=len(dns), learnt=Known(ids, slots))
