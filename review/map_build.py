"""The service map's one result object, from a learning source and, for a change, two policy sets.

The map of what was learnt is the store's workloads and edges, with each workload's policy as
``export --explain`` writes it. A change (``--against``, with ``--proposed`` or the synthesized set)
is the diff's comparison (:func:`~netpol_gen.review.diff.diff_sets`) on the learnt pods and Services
and the flows kept as evidence, as ``diff --db`` makes it; each edge's fate is read off that impact,
so the map and ``diff`` cannot disagree. Which policies select a workload is the evaluator's answer
for the workload's representative pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netpol_gen.errors import InputError
from netpol_gen.evaluator.engine import EGRESS, INGRESS, Evaluator
from netpol_gen.evaluator.impact import Connection, Impact, endpoint_group, representatives
from netpol_gen.evaluator.policy_diff import PolicyDocument, load_policy_documents
from netpol_gen.model.cluster import Cluster, Pod
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.review.diff import DiffReport, diff_sets, synthesized_documents
from netpol_gen.review.in_force import fetch_policies_in_force
from netpol_gen.review.map_model import Fate, MapEdge, MapNode, PeerKind, ServiceMap
from netpol_gen.review.summary import change_summary
from netpol_gen.service.source import LearningSource
from netpol_gen.synthesizer import Options, Synthesis, render_yaml, synthesize
from netpol_gen.synthesizer.verify import LearnedCluster

_PEER_KINDS = {IdentityKind.POD: PeerKind.WORKLOAD, IdentityKind.NODE: PeerKind.NODE,
               IdentityKind.EXTERNAL: PeerKind.EXTERNAL, IdentityKind.UNKNOWN: PeerKind.UNKNOWN}


@dataclass(frozen=True)
class MapRequest:
    """What the user gave: the proposed set's paths (empty: synthesized from the store) and the set
    in force (paths or the live cluster); neither of the latter: the map of what was learnt."""

    proposed: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    against_cluster: bool = False

    @property
    def shows_change(self) -> bool:
        return bool(self.against) or self.against_cluster

    def validate(self) -> None:
        if self.against and self.against_cluster:
            raise InputError("--against and --against-cluster exclude each other")
        if self.proposed and not self.shows_change:
            raise InputError("--proposed needs the set it would replace: give --against FILE|DIR or --against-cluster")


def _policy_texts(documents: Iterable[PolicyDocument], synthesis: Synthesis | None) -> dict[str, str]:
    """Each policy's YAML by key: the synthesized ones with their provenance comments."""
    if synthesis is None:
        return {d.key: d.to_yaml() for d in documents}
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": render_yaml([p], synthesis.evidence)
            for p in synthesis.policies}


class _Selecting:
    """Which policies of a set select each workload (either direction), asked of the evaluator."""

    def __init__(self, cluster: Cluster, documents: list[PolicyDocument], texts: dict[str, str]) -> None:
        self.evaluator = Evaluator(cluster, [d.policy for d in documents])
        self.texts = texts

    def of(self, pod: Pod) -> dict[str, str]:
        keys = {p.key for direction in (INGRESS, EGRESS) for p in self.evaluator.isolating(pod, direction)}
        return {key: self.texts[key] for key in sorted(keys) if key in self.texts}


class _Builder:
    def __init__(self, learned: LearnedInputs, learned_cluster: LearnedCluster) -> None:
        self.learned, self.learned_cluster = learned, learned_cluster
        self.nodes: dict[str, MapNode] = {}
        self.edges: dict[tuple[str, str, int, str], MapEdge] = {}
        self.groups: dict[str, str] = {}  # the impact's name of an endpoint -> its node's id

    def identity_node(self, identity: Identity) -> str:
        node_id = identity.describe()
        if node_id in self.nodes:
            return node_id
        kind = _PEER_KINDS[identity.kind]
        if kind is PeerKind.WORKLOAD:
            node = MapNode(node_id, kind, identity.workload_name or "", identity.namespace,
                           identity.workload_kind or "")
        elif kind is PeerKind.NODE:
            addresses = ", ".join(self.learned.nodes.get(identity.node or "", ()))
            node = MapNode(node_id, kind, identity.node or "", detail=f"node {addresses}".strip())
        else:
            names = self.learned.dns_names.get(identity.ip or "", ())
            what = "external" if kind is PeerKind.EXTERNAL else "unknown cluster address"
            node = MapNode(node_id, kind, names[0] if names else identity.ip or "",
                           detail=" ".join([what, identity.ip or "", *names[1:]]))
        self.nodes[node_id] = node
        if kind is not PeerKind.WORKLOAD:
            for _, endpoint in self.learned_cluster.endpoints(identity):
                self.groups.setdefault(endpoint_group(endpoint), node_id)
        return node_id

    def learnt(self) -> None:
        for workload in self.learned.workloads:
            node_id = f"{workload.namespace}/{workload.kind}/{workload.name}"
            self.nodes[node_id] = MapNode(node_id, PeerKind.WORKLOAD, workload.name, workload.namespace,
                                          workload.kind, pods=len(workload.pods))
        for e in self.learned.edges:
            key = (self.identity_node(e.src), self.identity_node(e.dst), e.port, e.protocol)
            self.edges[key] = MapEdge(*key, connections=e.connections, first_seen=e.first_seen,
                                      last_seen=e.last_seen)

    def _edge(self, connection: Connection) -> MapEdge:
        ends = []
        for group in (connection.src, connection.dst):
            node_id = self.groups.get(group, group)
            if node_id not in self.nodes:  # an end the store has no identity for (not expected; shown, not lost)
                self.nodes[node_id] = MapNode(node_id, PeerKind.UNKNOWN, group, detail="seen in the evidence only")
            ends.append(node_id)
        key = (ends[0], ends[1], connection.port, connection.protocol)
        return self.edges.setdefault(key, MapEdge(*key))

    def fates(self, impact: Impact) -> None:
        """Cut before new before denied: an edge some flows of which flip both ways shows the worse."""
        for edge in self.edges.values():
            edge.fate = Fate.ALLOWED
        for connection in impact.denied:
            self._edge(connection).fate = Fate.DENIED
        for fate, groups in ((Fate.NEW, impact.opening), (Fate.CUT, impact.breaking)):
            for group in groups:
                edge = self._edge(group.connection)
                edge.fate, edge.now, edge.proposed = fate, sorted(group.now), sorted(group.proposed)
        for opened in impact.opened:
            edge = self._edge(opened.connection)
            edge.fate, edge.now, edge.proposed = Fate.UNOBSERVED, [opened.now], [opened.proposed]


def _in_namespaces(service_map: ServiceMap, namespaces: frozenset[str]) -> ServiceMap:
    """Only the workloads of ``namespaces``, their edges and the peers at the other ends."""
    if not namespaces:
        return service_map
    namespace_of = {n.id: n.namespace for n in service_map.nodes}
    edges = [e for e in service_map.edges if {namespace_of[e.src], namespace_of[e.dst]} & namespaces]
    ends = {end for e in edges for end in (e.src, e.dst)}
    nodes = [n for n in service_map.nodes if n.namespace in namespaces or n.id in ends]
    return ServiceMap(nodes, edges, service_map.change, service_map.summary, service_map.warnings)


def build_service_map(source: LearningSource, request: MapRequest, options: Options) -> ServiceMap:
    """The map of what ``source`` learnt, or of what the requested change does to it; ``options``
    are ``export``'s (the synthesized set, and ``namespaces`` also limits what is drawn)."""
    request.validate()
    learned = source.learned()
    synthesis = synthesize(learned, options)
    learned_cluster = LearnedCluster(learned, source.services())
    builder = _Builder(learned, learned_cluster)
    builder.learnt()
    if request.proposed:
        proposed = load_policy_documents(request.proposed)
        proposed_texts = _policy_texts(proposed, None)
    else:
        proposed = synthesized_documents(synthesis)
        proposed_texts = _policy_texts(proposed, synthesis)
    report: DiffReport | None = None
    current: list[PolicyDocument] = []
    if request.shows_change:
        current = fetch_policies_in_force() if request.against_cluster else load_policy_documents(request.against)
        report = diff_sets(current, proposed, learned_cluster.cluster, source.evidence())
        builder.fates(report.impact)
    cluster = learned_cluster.cluster
    selecting = _Selecting(cluster, proposed, proposed_texts)
    in_force = _Selecting(cluster, current, _policy_texts(current, None))
    for node_id, pod in representatives(cluster).items():
        node = builder.nodes.get(node_id)
        if node is not None:
            node.policies, node.in_force = selecting.of(pod), in_force.of(pod)
    warnings = [d.bug_message() for d in synthesis.report.verification.denied] if not request.proposed else []
    change = None
    summary = [f"{len(learned.workloads)} workloads, {len(learned.edges)} edges learnt "
               f"({sum(e.connections for e in learned.edges)} connections)."]
    if report is not None:
        what = ", ".join(request.proposed) if request.proposed else "the policies synthesized from the store"
        against = "the cluster's policies" if request.against_cluster else ", ".join(request.against)
        change = f"{what} replacing {against}"
        summary += change_summary(report.policies, report.impact)
    nodes = sorted(builder.nodes.values(), key=lambda n: (n.namespace is None, n.namespace or "", n.id))
    edges = sorted(builder.edges.values(), key=lambda e: (e.src, e.dst, e.protocol, e.port))
    return _in_namespaces(ServiceMap(nodes, edges, change, summary, warnings), options.namespaces)
