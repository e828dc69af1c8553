"""Built-in verification: the generated policies judged by the evaluator on the learned pods.

Every edge the policies must allow is judged for every pod of its source against every pod of its
destination (and every address of a node end); a denial is a synthesizer bug. ``newly_opened``
measures tightness: workload pairs x ports the policies allow that were never observed.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.evaluator.cluster import (
    METADATA_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointKind,
    Namespace,
    Node,
    Pod,
    Workload,
)
from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.policy import parse_policy
from netpol_gen.store.identity import Identity, IdentityKind
from netpol_gen.synthesizer.model import (
    LearnedEdge,
    LearnedInputs,
    Options,
    WorkloadKey,
    workload_key,
)
from netpol_gen.synthesizer.scope import select_edges


@dataclass(frozen=True, slots=True)
class DeniedEdge:
    """One pod pair (or address) of an observed edge that the generated policies deny."""

    edge: LearnedEdge
    src: str
    dst: str
    reason: str

    def describe(self) -> str:
        return f"{self.edge.describe()}: {self.src} -> {self.dst} denied ({self.reason})"


@dataclass(frozen=True, slots=True, order=True)
class OpenedPair:
    """A workload pair x port allowed by the generated policies but never observed."""

    src: str
    dst: str
    port: int
    protocol: str


@dataclass
class Verification:
    """``judged``: connections judged (edges x pod pairs); ``unjudged``: edges with no address pair of
    one IP family to judge (pods without IPs)."""

    judged: int = 0
    denied: list[DeniedEdge] = field(default_factory=list)
    unjudged: list[LearnedEdge] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.denied


Addressed = tuple[int, Endpoint]  # (IP version, endpoint)


class LearnedCluster:
    """The learned pods, namespaces and nodes as an evaluator :class:`Cluster`, with each identity's
    endpoints (a workload's pods, a node's addresses, an address)."""

    def __init__(self, inputs: LearnedInputs) -> None:
        self.pods: dict[WorkloadKey, list[Pod]] = {}
        for workload in inputs.workloads:
            self.pods[workload.key] = [
                Pod(
                    namespace=workload.namespace,
                    name=view.name,
                    uid=f"{workload.namespace}/{view.name}",
                    labels=dict(view.labels),
                    ips=view.ips,
                    workload=Workload(workload.kind, workload.name),
                    node_name=view.node,
                    container_ports=view.container_ports,
                )
                for view in workload.pods
            ]
        self.nodes = {name: Node(name, tuple(addresses)) for name, addresses in inputs.nodes.items()}
        namespaces = [
            Namespace(name, {**labels, METADATA_NAME_LABEL: name}) for name, labels in inputs.namespace_labels.items()
        ]
        self.cluster = Cluster.build(
            namespaces=namespaces,
            pods=[pod for pods in self.pods.values() for pod in pods],
            nodes=self.nodes.values(),
        )
        self._endpoints: dict[Identity, list[Addressed]] = {}

    def endpoints(self, identity: Identity) -> list[Addressed]:
        """The identity's endpoints with their IP version, built once."""
        found = self._endpoints.get(identity)
        if found is None:
            found = [(ipaddress.ip_address(e.ip).version, e) for e in self._build_endpoints(identity)]
            self._endpoints[identity] = found
        return found

    def _build_endpoints(self, identity: Identity) -> list[Endpoint]:
        kind = identity.kind
        if kind is IdentityKind.POD:
            return [Endpoint(ip, EndpointKind.POD, pod=pod)
                    for pod in self.pods.get(workload_key(identity), []) for ip in pod.ips]
        if kind is IdentityKind.NODE:
            node = self.nodes.get(identity.node or "")
            return [Endpoint(ip, EndpointKind.NODE, node=node) for ip in node.addresses] if node else []
        endpoint_kind = EndpointKind.UNKNOWN_CLUSTER_IP if kind is IdentityKind.UNKNOWN else EndpointKind.EXTERNAL
        return [Endpoint(identity.ip, endpoint_kind)] if identity.ip else []


def _pairs(sources: Iterable[Addressed], destinations: Sequence[Addressed]) -> Iterable[tuple[Endpoint, Endpoint]]:
    """Every source x destination of the same IP family, except a pod with itself."""
    for version, src in sources:
        for dst_version, dst in destinations:
            if dst_version == version and not (src.pod is not None and src.pod is dst.pod):
                yield src, dst


def _evaluator(policies: Iterable[Mapping[str, Any]], learned: LearnedCluster) -> Evaluator:
    return Evaluator(learned.cluster, [parse_policy(p, where="generated") for p in policies])


def verify(policies: Sequence[Mapping[str, Any]], inputs: LearnedInputs, options: Options) -> Verification:
    """Judge every edge the policies must allow (see :func:`select_edges`) for every pod pair."""
    learned = LearnedCluster(inputs)
    evaluator = _evaluator(policies, learned)
    result = Verification()
    for edge in select_edges(inputs, options).kept:
        pairs = list(_pairs(learned.endpoints(edge.src), learned.endpoints(edge.dst)))
        if not pairs:
            result.unjudged.append(edge)
        for src, dst in pairs:
            verdict = evaluator.judge(src, dst, edge.port, edge.protocol)
            result.judged += 1
            if not verdict.allowed:
                result.denied.append(DeniedEdge(edge, src.describe(), dst.describe(), verdict.reason()))
    return result


def newly_opened(policies: Sequence[Mapping[str, Any]], inputs: LearnedInputs) -> list[OpenedPair]:
    """Workload pairs x ports (the destination's container ports and observed ports) that some pod pair
    may use under the generated policies although never observed, counting only pairs where a
    generated policy isolates a side (traffic between unisolated pods was open before)."""
    learned = LearnedCluster(inputs)
    evaluator = _evaluator(policies, learned)
    observed = {
        (workload_key(e.src), workload_key(e.dst), e.port, e.protocol)
        for e in inputs.edges
        if e.src.kind is IdentityKind.POD and e.dst.kind is IdentityKind.POD
    }
    ports: dict[WorkloadKey, set[tuple[int, str]]] = defaultdict(set)
    for workload in inputs.workloads:
        ports[workload.key].update((c.port, c.protocol) for pod in workload.pods for c in pod.container_ports)
    for _, dst_key, port, protocol in observed:
        ports[dst_key].add((port, protocol))
    opened: list[OpenedPair] = []
    for src_key in learned.pods:
        sources = learned.endpoints(Identity(IdentityKind.POD, *src_key))
        for dst_key in learned.pods:
            pairs = list(_pairs(sources, learned.endpoints(Identity(IdentityKind.POD, *dst_key))))
            for port, protocol in sorted(ports.get(dst_key, ())):
                if (src_key, dst_key, port, protocol) in observed:
                    continue
                if any(_opened_by_policy(evaluator, src, dst, port, protocol) for src, dst in pairs):
                    opened.append(OpenedPair("/".join(src_key), "/".join(dst_key), port, protocol))
    return sorted(opened)


def _opened_by_policy(evaluator: Evaluator, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
    verdict = evaluator.judge(src, dst, port, protocol)
    return verdict.allowed and (verdict.egress.isolated or verdict.ingress.isolated)
