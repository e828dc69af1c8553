"""The bottom floor: the records every stage passes on (cluster objects and their lookups over time,
flows, identities, aggregated edges, what was learnt). It imports nothing of netpol-gen but ``errors``."""

from netpol_gen.model.cluster import (
    Backend,
    Cluster,
    ContainerPort,
    Endpoint,
    EndpointKind,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
    ServiceTarget,
    Workload,
)
from netpol_gen.model.flows import Flow, iter_flows
from netpol_gen.model.snapshot import load_cluster

__all__ = [
    "Backend",
    "Cluster",
    "ContainerPort",
    "Endpoint",
    "EndpointKind",
    "Flow",
    "Namespace",
    "Node",
    "Pod",
    "Service",
    "ServicePort",
    "ServiceTarget",
    "Workload",
    "iter_flows",
    "load_cluster",
]
