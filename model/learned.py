"""What was learnt, as the synthesizer reads it: plain data, so the synthesizer knows nothing of the store.

An adapter reads the store into these: every workload with the pods seen for it (labels, container
ports, IPs, node), the aggregated edges between identities, namespace labels, node addresses and the
DNS names seen for external IPs. Edge ends are :class:`Identity` values (plain dataclasses:
importing it pulls in no database code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netpol_gen.model.cluster import ContainerPort
from netpol_gen.model.identity import Identity, IdentityKind

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

    ``established``: how many of the connections were learnt from a table of open connections
    (they were open before capture started) rather than from a captured handshake, by source.

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
    # connections learnt from a table of open connections (conntrack, sockets), by source; the rest were captured
    established: tuple[tuple[str, int], ...] = ()

    @property
    def captured(self) -> bool:
        """Whether capture saw at least one of the connections start (else they were all already open)."""
        return self.connections > sum(count for _, count in self.established)

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
    an external IP to the names it was resolved from; ``api_servers``: the API server's addresses."""

    workloads: tuple[LearnedWorkload, ...]
    edges: tuple[LearnedEdge, ...]
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dns_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    api_servers: tuple[str, ...] = ()
