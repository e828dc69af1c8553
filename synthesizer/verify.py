"""Built-in verification: the generated policies judged by the evaluator on the learned pods.

Every edge the policies must allow is verified for every pod of its source against every pod of its
destination (and every address of a node end); a denial is a synthesizer bug. An edge only ever seen
between pods and their own node is verified on the pods of that node. ``newly_opened`` measures
tightness: workload pairs x ports the policies allow that were never observed.

Judging each pod pair is quadratic in replicas (300 workloads of 10 pods and 4,000 edges are 400,000
pairs), so pairs are judged per equivalence class. The evaluator's verdict on (src, dst, port,
protocol) reads of a pod only: its namespace (isolating policies, namespace selectors), its labels
(pod and peer selectors), its container ports (named ports on the destination), its address (ipBlock
peers, which may match pod IPs too), its node (the own-node rule, which only applies when the other end
is a node address) and whether the other end is the same pod. Endpoints that agree on all of these are
therefore judged alike against any endpoint, so one representative pair per pair of classes decides
for all ``|A| x |B|`` pairs (minus the pod-with-itself pairs, which are not connections). The address
enters the class as its IP family and the set of the policies' ipBlocks that contain it, which is exact
for any policy set; the node enters only for edges with a node end. Nothing is assumed about the
policies, so a hand-edited or broken set is verified as soundly as a generated one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.frontends import parse_any
from netpol_gen.evaluator.impact import Connection, Impact, OpenedConnection, find_opened
from netpol_gen.model.cluster import (
    METADATA_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointKind,
    Namespace,
    Node,
    Pod,
    Service,
    Workload,
)
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import (
    LearnedEdge,
    LearnedInputs,
    WorkloadKey,
    workload_key,
)
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.scope import EdgeSelection, select_edges


@dataclass(frozen=True, slots=True)
class DeniedEdge:
    """Pod pairs (or addresses) of an observed edge that the generated policies deny: ``src``/``dst``
    is one of them, ``pairs`` how many alike (same equivalence classes) are denied with it."""

    edge: LearnedEdge
    src: str
    dst: str
    reason: str
    pairs: int = 1

    def describe(self) -> str:
        alike = f" and {self.pairs - 1} pod pairs alike" if self.pairs > 1 else ""
        return f"{self.edge.describe()}: {self.src} -> {self.dst}{alike} denied ({self.reason})"

    def bug_message(self) -> str:
        """The one phrasing of a verification failure: a bug of netpol-gen, never of the user's data."""
        return f"BUG: the generated policies deny observed traffic: {self.describe()}"


@dataclass
class Verification:
    """``judged``: connections verified (edges x pod pairs); ``evaluated``: the evaluator judgements
    that took (one per pair of equivalence classes); ``unjudged``: edges with no address pair of one IP
    family to judge (pods without IPs)."""

    judged: int = 0
    evaluated: int = 0
    denied: list[DeniedEdge] = field(default_factory=list)
    unjudged: list[LearnedEdge] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.denied


Addressed = tuple[int, Endpoint]  # (IP version, endpoint)


class LearnedCluster:
    """The learned pods, namespaces and nodes (and the Services, when given) as an evaluator
    :class:`Cluster`, with each identity's endpoints (a workload's pods, a node's addresses, an
    address)."""

    def __init__(self, inputs: LearnedInputs, services: Iterable[Service] = ()) -> None:
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
                    created=view.created,
                    ended=view.ended,
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
            services=services,
            api_servers=inputs.api_servers,
        )
        self._endpoints: dict[Identity, list[Addressed]] = {}
        self.dns_names = {ip: frozenset(n.rstrip(".").lower() for n in names) for ip, names in inputs.dns_names.items()}

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
            return [Endpoint(ip, EndpointKind.NODE, node=node, api_server=ip in self.cluster.api_servers)
                    for ip in node.addresses] if node else []
        if kind is IdentityKind.UNKNOWN:
            return [Endpoint(identity.ip, EndpointKind.UNKNOWN_CLUSTER_IP)] if identity.ip else []
        # an external address with the names it answered for while it was reached (toFQDNs)
        return [Endpoint(identity.ip, EndpointKind.EXTERNAL, names=self.dns_names.get(identity.ip, frozenset()),
                         api_server=identity.ip in self.cluster.api_servers)] if identity.ip else []


def _pairs(sources: Iterable[Addressed], destinations: Sequence[Addressed]) -> Iterable[tuple[Endpoint, Endpoint]]:
    """Every source x destination of the same IP family, except a pod with itself."""
    for version, src in sources:
        for dst_version, dst in destinations:
            if dst_version == version and not (src.pod is not None and src.pod is dst.pod):
                yield src, dst


def _evaluator(policies: Iterable[Mapping[str, Any]], learned: LearnedCluster) -> Evaluator:
    return Evaluator(learned.cluster, [parse_any(p, where="generated") for p in policies])


@dataclass
class _Class:
    """Endpoints the evaluator cannot tell apart (see the module docstring): up to two of distinct pods
    stand for all, ``per_pod`` counts the members of each pod (for the pod-with-itself pairs)."""

    version: int
    members: list[Endpoint] = field(default_factory=list)
    per_pod: Counter[int] = field(default_factory=Counter)

    def add(self, endpoint: Endpoint) -> None:
        owner = id(endpoint.pod) if endpoint.pod is not None else id(endpoint)
        if len(self.members) < 2 and owner not in self.per_pod:
            self.members.append(endpoint)
        self.per_pod[owner] += 1

    @property
    def size(self) -> int:
        return self.per_pod.total()


class _Classifier:
    """Groups an identity's endpoints into classes for a given policy set."""

    def __init__(self, learned: LearnedCluster, evaluator: Evaluator) -> None:
        self._learned = learned
        self._addresses = evaluator.addresses
        self._cache: dict[tuple[Identity, bool], list[_Class]] = {}

    def _signature(self, endpoint: Endpoint, with_node: bool) -> Hashable:
        pod = endpoint.pod
        if pod is None:  # a node or an outside address: its own class
            return id(endpoint)
        labels = frozenset(pod.labels.items())
        return (self._addresses.of(endpoint.ip), pod.namespace, labels, pod.container_ports,
                pod.node_name if with_node else None)

    def classes(self, identity: Identity, with_node: bool) -> list[_Class]:
        """``with_node``: the other end is a node, so the own-node rule tells pods of different nodes apart."""
        key = (identity, with_node)
        found = self._cache.get(key)
        if found is None:
            groups: dict[Hashable, _Class] = {}
            for version, endpoint in self._learned.endpoints(identity):
                signature = self._signature(endpoint, with_node)
                groups.setdefault(signature, _Class(version)).add(endpoint)
            found = self._cache[key] = list(groups.values())
        return found


def _class_pairs(sources: list[_Class], destinations: list[_Class]) -> Iterable[tuple[Endpoint, Endpoint, int]]:
    """Per pair of classes of one IP family: a representative address pair of distinct pods and the
    number of pairs (pod with itself excluded) it stands for."""
    for a in sources:
        for b in destinations:
            if a.version != b.version:
                continue
            pairs = a.size * b.size - sum(n * b.per_pod[owner] for owner, n in a.per_pod.items())
            if pairs:
                yield next((s, d, pairs) for s, d in _pairs(((a.version, m) for m in a.members),
                                                          [(b.version, m) for m in b.members]))


def _on_node(classes: list[_Class], node: str) -> list[_Class]:
    """The classes of pods on ``node`` (classes made ``with_node`` hold pods of one node each)."""
    return [c for c in classes if c.members[0].pod is None or c.members[0].pod.node_name == node]


def verify(policies: Sequence[Mapping[str, Any]], inputs: LearnedInputs, options: Options,
           selection: EdgeSelection | None = None) -> Verification:
    """Judge every edge the policies must allow (see :func:`select_edges`) for every pod pair, one
    representative pair per pair of equivalence classes (see the module docstring). ``selection``:
    ``select_edges(inputs, options)`` when the caller has it already (synthesis), not computed twice."""
    learned = LearnedCluster(inputs)
    evaluator = _evaluator(policies, learned)
    classifier = _Classifier(learned, evaluator)
    result = Verification()
    if selection is None:
        selection = select_edges(inputs, options)
    # the representative pairs depend on the ends (and the node), not the port: edges of one pair of
    # identities on several ports share them
    representatives: dict[tuple[Identity, Identity, bool, str | None], list[tuple[Endpoint, Endpoint, int]]] = {}
    for edge in (*selection.kept, *selection.own_node):
        node = edge.node_end
        on_node = node if edge.own_node_only else None
        key = (edge.src, edge.dst, node is not None, on_node)
        found = representatives.get(key)
        if found is None:
            sources = classifier.classes(edge.src, node is not None)
            destinations = classifier.classes(edge.dst, node is not None)
            if on_node is not None:
                sources, destinations = _on_node(sources, on_node), _on_node(destinations, on_node)
            found = representatives[key] = list(_class_pairs(sources, destinations))
        judged = result.judged
        for src, dst, pairs in found:
            verdict = evaluator.judge(src, dst, edge.port, edge.protocol)
            result.evaluated += 1
            result.judged += pairs
            if not verdict.allowed:
                result.denied.append(DeniedEdge(edge, src.describe(), dst.describe(), verdict.reason(), pairs))
        if result.judged == judged:
            result.unjudged.append(edge)
    return result


def newly_opened(policies: Sequence[Mapping[str, Any]], inputs: LearnedInputs) -> list[OpenedConnection]:
    """Workload pairs x declared ports that the generated rules open although never observed: the
    diff's search (:func:`netpol_gen.evaluator.impact.find_opened`) against the same policies without
    rules, so only what the rules allow beyond the isolation the policies impose counts (traffic
    between pods no policy isolates was open before)."""
    learned = LearnedCluster(inputs)
    proposed = [parse_any(p, where="generated") for p in policies]
    isolation_only = [dataclasses.replace(p, ingress=(), egress=()) for p in proposed]
    observed = {Connection("/".join(workload_key(e.src)), "/".join(workload_key(e.dst)), e.port, e.protocol)
                for e in inputs.edges if e.src.kind is IdentityKind.POD and e.dst.kind is IdentityKind.POD}
    impact = Impact()
    find_opened(Evaluator(learned.cluster, isolation_only), Evaluator(learned.cluster, proposed), observed, impact)
    return sorted(impact.opened, key=lambda o: o.connection)

