"""The synthesizer's input and options: plain data, so the library knows nothing of the store.

An adapter reads the store into these: every workload with the pods seen for it (labels, container
ports, IPs, node), the aggregated edges between identities, namespace labels, node addresses and the
DNS names seen for external IPs. Edge ends are the store's :class:`Identity` (a plain dataclass:
importing it pulls in no database code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netpol_gen.evaluator.cluster import ContainerPort
from netpol_gen.store.identity import Identity, IdentityKind

WorkloadKey = tuple[str, str, str]  # (namespace, kind, name)


def workload_key(identity: Identity) -> WorkloadKey:
    """The key of the workload a POD identity stands for."""
    return (identity.namespace or "", identity.workload_kind or "", identity.workload_name or "")


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod as the store saw it; ``name`` only tells pods apart (verification builds them).
    ``created``/``ended`` bound when it held its addresses, so recorded flows replayed on the learned
    pods (``diff --db``) are attributed to the pod of their time."""

    name: str
    labels: Mapping[str, str]
    container_ports: tuple[ContainerPort, ...] = ()
    ips: tuple[str, ...] = ()
    node: str | None = None
    created: float | None = None
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class LearnedWorkload:
    """A controller (Deployment, StatefulSet, DaemonSet, CronJob, Job) or a bare pod, with its pods.

    ``controller_selector`` is the controller's ``spec.selector.matchLabels`` when the snapshot had it."""

    namespace: str
    kind: str
    name: str
    pods: tuple[PodView, ...]
    controller_selector: Mapping[str, str] | None = None

    @property
    def key(self) -> WorkloadKey:
        return (self.namespace, self.kind, self.name)

    def __str__(self) -> str:
        return "/".join(self.key)


@dataclass(frozen=True, slots=True)
class LearnedEdge:
    """Connections from ``src`` to ``dst`` on ``port`` of the destination pod (a Service's targetPort).

    ``pod_nodes``, for an edge between a node and a workload: the nodes its pods ran on in the flows
    kept as per-pod evidence (None for a flow whose pod is unknown); empty when there is no evidence.
    """

    src: Identity
    dst: Identity
    port: int
    protocol: str
    connections: int = 1
    first_seen: float | None = None
    last_seen: float | None = None
    pod_nodes: frozenset[str | None] = frozenset()

    def describe(self) -> str:
        return f"{self.src.describe()} -> {self.dst.describe()} {self.port}/{self.protocol}"

    @property
    def node_end(self) -> str | None:
        """The node of an edge between a node and a workload's pods, else None."""
        kinds = (self.src.kind, self.dst.kind)
        if kinds == (IdentityKind.NODE, IdentityKind.POD):
            return self.src.node
        if kinds == (IdentityKind.POD, IdentityKind.NODE):
            return self.dst.node
        return None

    @property
    def own_node_only(self) -> bool:
        """Whether every flow kept as evidence ran between a pod and the node it runs on: traffic the
        evaluator (and every CNI) allows whatever the policies say, e.g. kubelet probes."""
        node = self.node_end
        return node is not None and self.pod_nodes == {node}


@dataclass(frozen=True)
class LearnedInputs:
    """Everything the synthesizer reads. ``nodes`` maps a node name to its addresses, ``dns_names``
    an external IP to the names it was resolved from."""

    workloads: tuple[LearnedWorkload, ...]
    edges: tuple[LearnedEdge, ...]
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dns_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """What to generate. ``namespaces`` empty means every namespace not in ``exclude_namespaces``.

    ``port_range_min`` None keeps every port separate: ``endPort`` needs Kubernetes 1.25 and a CNI
    that implements it (some silently ignore it), so ranges are opt-in. ``cidr_aggregate`` (IPv4) and
    ``cidr_aggregate_v6`` fold external IPs that share that prefix and the same ports into one ipBlock.
    ``dns_tcp``: a resolver seen on UDP port P is also allowed on TCP P, because a DNS answer too large
    for UDP is retried over TCP (RFC 7766); a policy with UDP alone breaks those lookups at random.
    """

    namespaces: frozenset[str] = frozenset()
    exclude_namespaces: frozenset[str] = frozenset({"kube-system"})
    since: float | None = None
    until: float | None = None
    min_connections: int = 1
    ingress_only: bool = False
    egress_only: bool = False
    default_deny: bool = False
    isolate_idle: bool = False
    include_unknown: bool = False
    named_ports: bool = True
    dns_tcp: bool = True
    port_range_min: int | None = None
    cidr_aggregate: int | None = None
    cidr_aggregate_v6: int | None = None

    def __post_init__(self) -> None:
        if self.ingress_only and self.egress_only:
            raise ValueError("ingress_only and egress_only exclude each other")
        if self.port_range_min is not None and self.port_range_min < 2:
            raise ValueError("port_range_min must be at least 2")
        if self.cidr_aggregate is not None and not 0 < self.cidr_aggregate <= 32:
            raise ValueError("cidr_aggregate must be an IPv4 prefix length 1-32")
        if self.cidr_aggregate_v6 is not None and not 0 < self.cidr_aggregate_v6 <= 128:
            raise ValueError("cidr_aggregate_v6 must be an IPv6 prefix length 1-128")

    def in_scope(self, namespace: str) -> bool:
        """Whether workloads of ``namespace`` get policies."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        return namespace not in self.exclude_namespaces

    @property
    def directions(self) -> tuple[str, ...]:
        if self.ingress_only:
            return ("Ingress",)
        if self.egress_only:
            return ("Egress",)
        return ("Ingress", "Egress")
