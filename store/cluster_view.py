"""The cluster as the store remembers it, as an evaluator :class:`Cluster`: every pod ever written with
its real uid, labels, container ports, node and the interval it held each address, the namespaces,
nodes and Services. What a shadow set judges a batch against when the batch came without the cluster
view it was attributed against (a collector sends its view only when it changed, so not after a
restart of ``serve``). Whether it changed since it was read says :mod:`netpol_gen.store.revision`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from netpol_gen.model.cluster import METADATA_NAME_LABEL, Cluster, ContainerPort, Namespace, Node, Pod, Workload
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store
from netpol_gen.store.learned import load_services, read_api_servers


def _pod(rows: list[Any]) -> Pod:
    first = rows[0]
    starts = [row.valid_from for row in rows]
    ends = [row.valid_to for row in rows]
    return Pod(
        namespace=first.namespace, name=first.name, uid=first.pod_uid, labels=dict(first.labels),
        ips=tuple(row.ip for row in rows), workload=Workload(first.workload_kind, first.workload_name),
        host_network=first.host_network, node_name=first.node,
        container_ports=tuple(ContainerPort(int(p["port"]), str(p.get("protocol") or "TCP"), p.get("name"))
                              for p in first.container_ports),
        created=None if None in starts else min(starts), ended=None if None in ends else max(ends))


def load_cluster(store: Store) -> Cluster:
    """Every pod, namespace, node, Service and API server address in the store."""
    by_uid: dict[str, list[Any]] = defaultdict(list)
    with store.reading() as conn:
        for row in conn.execute(sa.select(t.endpoints).order_by(t.endpoints.c.pod_uid, t.endpoints.c.ip)):
            by_uid[row.pod_uid].append(row)
        namespaces = [Namespace(row.name, {**row.labels, METADATA_NAME_LABEL: row.name})
                      for row in conn.execute(sa.select(t.namespaces))]
        nodes = [Node(row.name, tuple(row.addresses), tuple(row.pod_cidrs)) for row in conn.execute(sa.select(t.nodes))]
        api_servers = read_api_servers(conn)
    return Cluster.build(namespaces, [_pod(rows) for rows in by_uid.values()], load_services(store), (), nodes,
                         api_servers=api_servers)

