"""Read what was learnt out of the store as the synthesizer's input (:class:`LearnedInputs`).

The store keeps identity as it was at ingest: every pod seen for a workload with its labels,
container ports, addresses and node, so the synthesizer chooses selectors from the pods that really
carried the traffic, not from today's cluster. Host-network pods are not policy subjects (their
traffic carries the node's address) and are left out of the workloads.

For an edge between a node and a workload, the flows kept as evidence (``edge_samples``) say which
pods it reached, hence on which nodes they ran: the synthesizer leaves out node peers only ever seen
talking to pods on that same node (the own-node rule allows them anyway).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.cluster import ContainerPort, Service, ServicePort
from netpol_gen.model.dns import DnsAnswerSeen
from netpol_gen.model.flows import Flow
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import LearnedEdge, LearnedInputs, LearnedWorkload, PodView
from netpol_gen.store import schema
from netpol_gen.store.db import Store
from netpol_gen.store.query import read_established
from netpol_gen.store.sound import report_unsound, sound_dns_answer, sound_edge, sound_sample


def _identity(row: Any) -> Identity:
    return Identity(
        IdentityKind(row.kind),
        namespace=row.namespace,
        workload_kind=row.workload_kind,
        workload_name=row.workload_name,
        node=row.node,
        ip=row.ip,
    )


def _pod_nodes(conn: sa.Connection) -> dict[int, frozenset[str | None]]:
    """Per edge between a node and a workload: the nodes of the pods in its samples (None: pod unknown)."""
    src, dst = schema.identities.alias("src"), schema.identities.alias("dst")
    samples, edges, endpoints = schema.edge_samples, schema.edges, schema.endpoints
    pod_uid = sa.case((src.c.kind == IdentityKind.NODE.value, samples.c.dst_pod_uid), else_=samples.c.src_pod_uid)
    node_of_pod = sa.select(endpoints.c.node).where(endpoints.c.pod_uid == pod_uid).limit(1).scalar_subquery()
    query = (
        sa.select(samples.c.edge_id, node_of_pod)
        .join(edges, edges.c.id == samples.c.edge_id)
        .join(src, src.c.id == edges.c.src_id)
        .join(dst, dst.c.id == edges.c.dst_id)
        .where(sa.or_(sa.and_(src.c.kind == IdentityKind.NODE.value, dst.c.kind == IdentityKind.POD.value),
                      sa.and_(src.c.kind == IdentityKind.POD.value, dst.c.kind == IdentityKind.NODE.value)))
    )
    nodes: dict[int, set[str | None]] = defaultdict(set)
    for edge_id, node in conn.execute(query):
        nodes[edge_id].add(node)
    return {edge_id: frozenset(found) for edge_id, found in nodes.items()}


def _workloads(conn: sa.Connection) -> tuple[LearnedWorkload, ...]:
    pods: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    query = sa.select(schema.endpoints).where(schema.endpoints.c.host_network.is_(False))
    for row in conn.execute(query.order_by(schema.endpoints.c.pod_uid, schema.endpoints.c.ip)):
        seen = pods[(row.namespace, row.workload_kind, row.workload_name)].setdefault(
            row.pod_uid,
            {
                "name": row.name,
                "labels": dict(row.labels),
                "ports": tuple(
                    ContainerPort(int(p["port"]), str(p.get("protocol") or "TCP"), p.get("name"))
                    for p in row.container_ports
                ),
                "ips": [],
                "node": row.node,
                "created": row.valid_from,
                "ended": row.valid_to,
            },
        )
        seen["ips"].append(row.ip)
        seen["created"] = _earliest(seen["created"], row.valid_from)
        seen["ended"] = None if seen["ended"] is None or row.valid_to is None else max(seen["ended"], row.valid_to)
    return tuple(
        LearnedWorkload(
            namespace=namespace,
            kind=kind,
            name=name,
            pods=tuple(
                PodView(p["name"], p["labels"], p["ports"], tuple(p["ips"]), p["node"], p["created"], p["ended"])
                for _, p in sorted(by_uid.items())
            ),
        )
        for (namespace, kind, name), by_uid in sorted(pods.items())
    )


def _earliest(a: float | None, b: float | None) -> float | None:
    """The earlier of two creation times; unknown (None) is earliest, as the pod may be older."""
    return None if a is None or b is None else min(a, b)


def load_learned(store: Store) -> LearnedInputs:
    """Every workload, edge, namespace, node, DNS name and API server address in the store (the synthesizer applies the
    learning window and the other options itself)."""
    with store.reading() as conn:
        identities = {row.id: _identity(row) for row in conn.execute(sa.select(schema.identities))}
        pod_nodes = _pod_nodes(conn)
        established = read_established(conn)
        edges = tuple(
            LearnedEdge(
                src=identities[row.src_id],
                dst=identities[row.dst_id],
                port=row.dst_port,
                protocol=row.protocol,
                connections=row.connections,
                first_seen=row.first_seen,
                last_seen=row.last_seen,
                pod_nodes=pod_nodes.get(row.id, frozenset()),
                established=established.get(row.id, ()),
            )
            for row in conn.execute(sa.select(schema.edges).where(sound_edge()).order_by(schema.edges.c.id))
        )
        report_unsound(conn, schema.edges, sound_edge())
        names: dict[str, list[str]] = defaultdict(list)
        query = sa.select(schema.identities.c.ip, schema.identity_names.c.name).join(
            schema.identity_names, schema.identity_names.c.identity_id == schema.identities.c.id
        )
        for ip, name in conn.execute(query.order_by(schema.identity_names.c.name)):
            if ip:
                names[ip].append(name)
        return LearnedInputs(
            workloads=_workloads(conn),
            edges=edges,
            namespace_labels={r.name: dict(r.labels) for r in conn.execute(sa.select(schema.namespaces))},
            nodes={r.name: tuple(r.addresses) for r in conn.execute(sa.select(schema.nodes))},
            dns_names={ip: tuple(sorted(set(ns))) for ip, ns in names.items()},
            api_servers=tuple(read_api_servers(conn)),
        )


def read_api_servers(conn: Connection) -> list[str]:
    """The API server's addresses the store learnt (none in a store older than the table, opened to read)."""
    if not sa.inspect(conn).has_table(schema.api_servers.name):
        return []
    return list(conn.execute(sa.select(schema.api_servers.c.address).order_by(schema.api_servers.c.address)).scalars())


def load_dns_answers(store: Store) -> list[DnsAnswerSeen]:
    """The DNS answers recorded (name, address, TTL, first and last seen): what names an external
    address stood for at a flow's time (``check --db``, Cilium ``toFQDNs``)."""
    table = schema.dns_answers
    with store.reading() as conn:
        return [DnsAnswerSeen(row.name, row.address, row.ttl, row.first_seen, row.last_seen)
                for row in conn.execute(sa.select(table).where(sound_dns_answer())
                                        .order_by(table.c.address, table.c.name))]


def load_evidence(store: Store) -> list[Flow]:
    """The flows kept as evidence (``edge_samples``), as seen on the wire, in a stable order: the
    recorded traffic of ``diff --db``."""
    samples, edges = schema.edge_samples, schema.edges
    query = (sa.select(samples, edges.c.protocol).join(edges, edges.c.id == samples.c.edge_id)
             .where(sound_sample(), sound_edge()).order_by(samples.c.edge_id, samples.c.slot))
    with store.reading() as conn:
        return [Flow(row.src_ip, row.dst_ip, row.dst_port, row.protocol, row.src_port, row.ts, row.packets, row.bytes)
                for row in conn.execute(query)]


def _target_port(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def load_services(store: Store) -> list[Service]:
    """The Services seen, so that flows to a Service address replay to its backends among the learned
    pods (selected by the Service's selector, at the flow's time)."""
    ports: dict[tuple[str, str], list[ServicePort]] = defaultdict(list)
    with store.reading() as conn:
        table = schema.service_ports
        for row in conn.execute(sa.select(table).order_by(table.c.namespace, table.c.service, table.c.port)):
            ports[(row.namespace, row.service)].append(
                ServicePort(row.port, row.protocol, row.name, _target_port(row.target_port), row.node_port))
        return [Service(row.namespace, row.name, row.selector, tuple(ports[(row.namespace, row.name)]),
                        tuple(row.cluster_ips), tuple(row.external_ips), row.type)
                for row in conn.execute(sa.select(schema.services).order_by(schema.services.c.namespace,
                                                                            schema.services.c.name))]
