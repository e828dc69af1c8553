"""The store's tables: one schema for SQLite and PostgreSQL, written with SQLAlchemy Core.

What the synthesizer needs is kept as it was seen at ingest: the pods of each workload with their
labels, container ports and the interval in which they held each IP (``endpoints``), namespaces
with labels, Services with their ports, nodes; and the aggregated ``edges`` between identities.

An identity is what a policy can name: a workload (``pod``), a node (node addresses, host-network
pods, SNATed traffic), an external IP (with the DNS names it was reached under) or an unknown
cluster IP. Edges are per (source identity, destination identity, destination port, protocol),
the destination port being the port on the pod (a Service's targetPort, resolved per pod). A few
raw flows per edge are kept in ``edge_samples`` as per-pod evidence.

Bump :data:`SCHEMA_VERSION` on any change; :mod:`netpol_gen.store.db` refuses other versions.
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1

metadata = sa.MetaData()

meta = sa.Table(
    "netpol_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

imports = sa.Table(
    "imports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("flows", sa.Integer, nullable=False),
    sa.Column("imported_at", sa.Double, nullable=False),
    sa.Index("ix_imports_imported_at", "imported_at"),  # retention's range of rows past the window
)

namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("name", sa.String(253), primary_key=True),
    sa.Column("labels", sa.JSON, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(253), primary_key=True),
    sa.Column("addresses", sa.JSON, nullable=False),
    sa.Column("pod_cidrs", sa.JSON, nullable=False),
)

services = sa.Table(
    "services",
    metadata,
    sa.Column("namespace", sa.String(253), primary_key=True),
    sa.Column("name", sa.String(253), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("selector", sa.JSON, nullable=True),
    sa.Column("cluster_ips", sa.JSON, nullable=False),
    sa.Column("external_ips", sa.JSON, nullable=False),
)

service_ports = sa.Table(
    "service_ports",
    metadata,
    sa.Column("namespace", sa.String(253), primary_key=True),
    sa.Column("service", sa.String(253), primary_key=True),
    sa.Column("port", sa.Integer, primary_key=True),
    sa.Column("protocol", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(63), nullable=True),
    sa.Column("target_port", sa.String(63), nullable=True),  # a number or a container port name
    sa.Column("node_port", sa.Integer, nullable=True),
    sa.ForeignKeyConstraint(["namespace", "service"], ["services.namespace", "services.name"]),
)

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(600), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # pod | node | external | unknown
    sa.Column("namespace", sa.String(253), nullable=True),
    sa.Column("workload_kind", sa.String(63), nullable=True),
    sa.Column("workload_name", sa.String(253), nullable=True),
    sa.Column("node", sa.String(253), nullable=True),
    sa.Column("ip", sa.String(45), nullable=True),
)

identity_names = sa.Table(
    "identity_names",
    metadata,
    sa.Column("identity_id", sa.Integer, sa.ForeignKey("identities.id"), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
)

endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("pod_uid", sa.String(64), primary_key=True),
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("identity_id", sa.Integer, sa.ForeignKey("identities.id"), nullable=False),
    sa.Column("namespace", sa.String(253), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("workload_kind", sa.String(63), nullable=False),
    sa.Column("workload_name", sa.String(253), nullable=False),
    sa.Column("node", sa.String(253), nullable=True),
    sa.Column("host_network", sa.Boolean, nullable=False),
    sa.Column("container_ports", sa.JSON, nullable=False),  # [{"port", "protocol", "name"}]
    sa.Column("valid_from", sa.Double, nullable=True),
    sa.Column("valid_to", sa.Double, nullable=True),
    sa.Index("ix_endpoints_ip", "ip"),
)

edges = sa.Table(
    "edges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("src_id", sa.Integer, sa.ForeignKey("identities.id"), nullable=False),
    sa.Column("dst_id", sa.Integer, sa.ForeignKey("identities.id"), nullable=False),
    sa.Column("dst_port", sa.Integer, nullable=False),
    sa.Column("protocol", sa.String(8), nullable=False),
    sa.Column("connections", sa.BigInteger, nullable=False),
    sa.Column("packets", sa.BigInteger, nullable=True),  # NULL: never known (flow logs without counters)
    sa.Column("bytes", sa.BigInteger, nullable=True),
    sa.Column("first_seen", sa.Double, nullable=True),  # NULL: flows without timestamps only
    sa.Column("last_seen", sa.Double, nullable=True),
    sa.UniqueConstraint("src_id", "dst_id", "dst_port", "protocol", name="uq_edges_key"),
    sa.Index("ix_edges_dst", "dst_id"),
)

edge_samples = sa.Table(
    "edge_samples",
    metadata,
    sa.Column("edge_id", sa.Integer, sa.ForeignKey("edges.id"), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),  # 0..limit-1: the bound on samples per edge
    sa.Column("ts", sa.Double, nullable=True),
    sa.Column("src_ip", sa.String(45), nullable=False),
    sa.Column("src_port", sa.Integer, nullable=True),
    sa.Column("dst_ip", sa.String(45), nullable=False),  # as on the wire: may be a ClusterIP
    sa.Column("dst_port", sa.Integer, nullable=False),  # as on the wire: may be a Service port
    sa.Column("src_pod_uid", sa.String(64), nullable=True),
    sa.Column("dst_pod_uid", sa.String(64), nullable=True),
    sa.Column("service", sa.String(507), nullable=True),  # namespace/name when reached via a Service
    sa.Column("packets", sa.BigInteger, nullable=True),
    sa.Column("bytes", sa.BigInteger, nullable=True),
)

dns_answers = sa.Table(
    "dns_answers",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("address", sa.String(45), primary_key=True),
    sa.Column("ttl", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Index("ix_dns_answers_address", "address"),
)

# Provenance (#18): connections of an edge learnt from a table of open connections (``conntrack``,
# ``sockets``) instead of a captured handshake, per source; an edge's other connections were captured.
# Only edges with such connections have rows, so capture-only batches write nothing here.
edge_established = sa.Table(
    "edge_established",
    metadata,
    sa.Column("edge_id", sa.Integer, sa.ForeignKey("edges.id"), primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("connections", sa.BigInteger, nullable=False),
)

# Shadow sets (#13): named policy sets every connection ingested after ``added_at`` is judged against
# (``documents``: the policy objects as given, validated when added). A connection a set denies is
# recorded once per (set, edge, time bucket its connections were last seen: the minute, an hour once a
# day old, a day past --retain; column ``hour`` holds the bucket's start) with the denying side
# (egress | ingress | both), the policies on that side, and the addresses of one denied connection
# (what ``watch`` names a node by). New tables only: writers create them in older stores on open.
shadow_sets = sa.Table(
    "shadow_sets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("documents", sa.JSON, nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
)

shadow_denials = sa.Table(
    "shadow_denials",
    metadata,
    sa.Column("set_id", sa.Integer, sa.ForeignKey("shadow_sets.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("edge_id", sa.Integer, sa.ForeignKey("edges.id"), primary_key=True),
    sa.Column("hour", sa.Double, primary_key=True),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("policies", sa.JSON, nullable=False),
    sa.Column("src_ip", sa.String(45), nullable=False),
    sa.Column("dst_ip", sa.String(45), nullable=False),
    sa.Column("connections", sa.BigInteger, nullable=False),
    sa.Column("first_seen", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Index("ix_shadow_denials_last_seen", "last_seen"),
)

# Retention (#16): the collector batches whose rows ``prune`` removed from ``imports`` once they left the
# window, counted per (kind, source), so ``status`` totals and each node's last delivery stay as they were.
delivery_totals = sa.Table(
    "delivery_totals",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("batches", sa.BigInteger, nullable=False),
    sa.Column("flows", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.Double, nullable=False),
)

# Denied in force (#13): connection attempts of an edge never answered (a SYN retransmitted without SYN-ACK),
# per bucket its connections were last seen in (the minute, an hour once a day old), with the addresses of one
# of them. Only edges with such attempts have rows (:mod:`netpol_gen.store.unanswered`).
edge_unanswered = sa.Table(
    "edge_unanswered",
    metadata,
    sa.Column("edge_id", sa.Integer, sa.ForeignKey("edges.id"), primary_key=True),
    sa.Column("minute", sa.Double, primary_key=True),
    sa.Column("attempts", sa.BigInteger, nullable=False),
    sa.Column("src_ip", sa.String(45), nullable=False),
    sa.Column("dst_ip", sa.String(45), nullable=False),
    sa.Column("first_seen", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Index("ix_edge_unanswered_last_seen", "last_seen"),
)

# Cilium's entity kube-apiserver (#11): the addresses the default/kubernetes Service's EndpointSlices named in
# any cluster view written (kept, as pods are, after they change: a flow of that time still went to them).
api_servers = sa.Table(
    "api_servers",
    metadata,
    sa.Column("address", sa.String(45), primary_key=True),
)

# Tables added within schema version 1: a writer opening an older store creates them (nothing else changes).
ADDED_TABLES = [shadow_sets, shadow_denials, delivery_totals, edge_unanswered, api_servers]
