"""NetworkPolicy semantics: the cluster model, policy parsing and validation, and the evaluator.

This is the one place that knows how selectors, peers and ports match; the synthesizer, ``diff``
and ``check`` all ask it.
"""

from netpol_gen.evaluator.cluster import (
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
from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.flows import Flow, iter_flows
from netpol_gen.evaluator.policy import NetworkPolicy, load_policies, parse_policy
from netpol_gen.evaluator.snapshot import load_cluster
from netpol_gen.evaluator.verdict import Basis, FlowVerdict, RuleRef, SideVerdict, Verdict

__all__ = [
    "Backend",
    "Basis",
    "Cluster",
    "ContainerPort",
    "Endpoint",
    "EndpointKind",
    "Evaluator",
    "Flow",
    "FlowVerdict",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "Pod",
    "RuleRef",
    "Service",
    "ServicePort",
    "ServiceTarget",
    "SideVerdict",
    "Verdict",
    "Workload",
    "iter_flows",
    "load_cluster",
    "load_policies",
    "parse_policy",
]
