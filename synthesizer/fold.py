"""Exact folds of a rule's pod peers, each proven by the evaluator on the learned pods.

* Labels (``Options.fold``): peers of one namespace with the same labels but for the value of one key
  (the first of their keys in the selectors' preference order) become one peer ``key In [values]``.
  That selector is the union of theirs by construction (same other labels, the key in the values), for
  today's pods and tomorrow's; the evaluator confirms it on the learned pods before it is used. The
  group a peer joins depends on its own labels only, so a new workload adds a value to its group (or
  starts its own), it never regroups the others.
* Namespaces (``Options.fold_namespaces``): peers of one namespace that together select every learned
  pod of it become the namespace alone (``namespaceSelector`` only, or an empty ``podSelector`` in the
  policy's own namespace). Exact on today's pods, but it admits workloads created there later: opt-in,
  and the report says where it was done.

A fold is used only when the evaluator finds that it selects exactly the pods its members select
together: for the label fold that is a check of the construction, for the namespace fold the decision.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.policy import Peer, parse_peer
from netpol_gen.model.cluster import METADATA_NAME_LABEL, Endpoint, EndpointKind
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.peers import PeerRef
from netpol_gen.synthesizer.render import Inline
from netpol_gen.synthesizer.verify import LearnedCluster

PodClass = tuple[str, frozenset[tuple[str, str]]]  # what a selector sees of a pod: namespace, labels


@dataclass(frozen=True)
class RulePeer:
    """A ``from``/``to`` entry as written, and the peers it stands for (one unless folded)."""

    rendered: dict[str, Any]
    sort_key: tuple[Any, ...]
    members: tuple[PeerRef, ...]
    namespace_wide: str | None = None  # the namespace it admits whole (a namespace fold)

    @classmethod
    def of(cls, peer: PeerRef) -> RulePeer:
        return cls(peer.render(), peer.sort_key, (peer,))

    @property
    def folded(self) -> bool:
        return len(self.members) > 1


class PodPopulation:
    """The learned pods, one per distinct (namespace, labels), and which of them a peer selects,
    as the evaluator matches peers (cached: a workload is a peer of many policies)."""

    def __init__(self, inputs: LearnedInputs) -> None:
        learned = LearnedCluster(inputs)
        self._evaluator = Evaluator(learned.cluster, ())
        by_namespace: dict[str, dict[PodClass, Endpoint]] = defaultdict(dict)
        for pods in learned.pods.values():
            for pod in pods:
                # the address is never read: selectors see the namespace and labels only
                endpoint = Endpoint(pod.ips[0] if pod.ips else "", EndpointKind.POD, pod=pod)
                by_namespace[pod.namespace].setdefault((pod.namespace, frozenset(pod.labels.items())), endpoint)
        self._by_namespace = {ns: list(classes.items()) for ns, classes in sorted(by_namespace.items())}
        self._selected: dict[tuple[str, str | None], frozenset[PodClass]] = {}
        self._in_namespace: dict[tuple[str, str], frozenset[PodClass]] = {}
        self._members: dict[tuple[PeerRef, str | None], frozenset[PodClass]] = {}

    def namespace(self, namespace: str) -> frozenset[PodClass]:
        return frozenset(c for c, _ in self._by_namespace.get(namespace, ()))

    def selected(self, rendered: dict[str, Any], policy_namespace: str) -> frozenset[PodClass]:
        # the policy's namespace matters only to a peer without namespaceSelector (its own namespace's
        # pods): one with it selects the same pods in every policy, a workload being a peer of many
        scope = policy_namespace if rendered.get("namespaceSelector") is None else None
        key = (json.dumps(rendered, sort_keys=True), scope)
        found = self._selected.get(key)
        if found is None:
            peer = parse_peer(rendered, "folded peer")
            # the evaluator ANDs the two parts, and the namespace part sees only the namespace: it is
            # judged once per namespace, the pod part on that namespace's pods (see _pods_in)
            namespace_part = dataclasses.replace(peer, pod_selector=None)
            pod_part = dataclasses.replace(peer, namespace_selector=None)
            pods_key = json.dumps(rendered.get("podSelector"), sort_keys=True)
            found = self._selected[key] = frozenset().union(*(
                self._pods_in(namespace, pod_part, pods_key) for namespace, classes in self._by_namespace.items()
                if self._evaluator.peer_matches(namespace_part, policy_namespace, classes[0][1])))
        return found

    def _pods_in(self, namespace: str, pod_part: Peer, pods_key: str) -> frozenset[PodClass]:
        """The pods of ``namespace`` that ``pod_part`` (a peer without namespaceSelector, its podSelector
        rendered as ``pods_key``) selects: the same for a workload's peer in its own namespace's policies
        and in every other's, so judged once."""
        key = (pods_key, namespace)
        found = self._in_namespace.get(key)
        if found is None:
            found = self._in_namespace[key] = frozenset(
                pod_class for pod_class, endpoint in self._by_namespace[namespace]
                if self._evaluator.peer_matches(pod_part, namespace, endpoint))
        return found

    def proves(self, folded: dict[str, Any], members: Iterable[PeerRef], policy_namespace: str) -> bool:
        """Whether ``folded`` selects exactly the learned pods that ``members`` select together."""
        union = frozenset().union(*(self._member(m, policy_namespace) for m in members))
        return self.selected(folded, policy_namespace) == union

    def _member(self, peer: PeerRef, policy_namespace: str) -> frozenset[PodClass]:
        """:meth:`selected` of ``peer`` as rendered, by the peer itself: a fold's member is proven in
        every rule it is in, and rendering it and its key each time cost more than the lookup."""
        key = (peer, policy_namespace if peer.namespace is None else None)  # as selected's scope
        found = self._members.get(key)
        if found is None:
            found = self._members[key] = self.selected(peer.render(), policy_namespace)
        return found


def _sort_key(peer: PeerRef) -> tuple[Any, ...]:
    return peer.sort_key


def _with_namespace(pod_selector: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    peer: dict[str, Any] = {"podSelector": pod_selector}
    if namespace is not None:
        peer["namespaceSelector"] = {"matchLabels": {METADATA_NAME_LABEL: namespace}}
    return peer


def _namespace_peer(namespace: str | None) -> dict[str, Any]:
    """Every pod of the namespace: ``podSelector: {}`` is the policy's own, a namespace selector alone another."""
    if namespace is None:
        return {"podSelector": {}}
    return {"namespaceSelector": {"matchLabels": {METADATA_NAME_LABEL: namespace}}}


def _in_peer(members: Sequence[PeerRef]) -> dict[str, Any]:
    others, key, _ = members[0].fold_key
    selector: dict[str, Any] = {"matchExpressions": [
        {"key": key, "operator": "In", "values": Inline(sorted(m.fold_key[2] for m in members))}]}
    if others:
        selector["matchLabels"] = dict(others)
    return _with_namespace(selector, members[0].namespace)


class PeerFolder:
    """Folds the peers of each rule as ``options`` ask; the pods are read once, on first use."""

    def __init__(self, inputs: LearnedInputs, options: Options) -> None:
        self._inputs = inputs
        self.labels = options.fold
        self.namespaces = options.fold_namespaces
        self._population: PodPopulation | None = None

    @property
    def population(self) -> PodPopulation:
        if self._population is None:
            self._population = PodPopulation(self._inputs)
        return self._population

    def fold(self, peers: Iterable[PeerRef], policy_namespace: str) -> list[RulePeer]:
        """The entries of one rule for ``peers``, in a stable order."""
        entries: list[RulePeer] = []
        by_namespace: dict[str | None, list[PeerRef]] = defaultdict(list)
        for peer in peers:
            if peer.cidr is None and peer.labels and (self.labels or self.namespaces):
                by_namespace[peer.namespace].append(peer)
            else:
                entries.append(RulePeer.of(peer))
        for namespace, members in by_namespace.items():
            entries.extend(self._fold_namespace(namespace, members, policy_namespace))
        return sorted(entries, key=lambda e: e.sort_key)

    def _fold_namespace(self, namespace: str | None, members: list[PeerRef], policy_namespace: str) -> list[RulePeer]:
        """The pod peers of one namespace (None: the policy's own): the namespace whole when asked and
        proven, else one entry per fold group (folded when asked and proven)."""
        if self.namespaces and len(members) > 1:
            candidate = _namespace_peer(namespace)
            if self.population.proves(candidate, members, policy_namespace):
                name = namespace or policy_namespace
                return [RulePeer(candidate, (0, namespace or "", (), "", ()), tuple(sorted(members, key=_sort_key)),
                                 namespace_wide=name)]
        groups: dict[tuple[Any, ...], list[PeerRef]] = defaultdict(list)
        for peer in members:
            groups[peer.fold_key[:2]].append(peer)
        entries = []
        for group in groups.values():
            group.sort(key=_sort_key)
            if self.labels and len(group) > 1:
                candidate = _in_peer(group)
                if self.population.proves(candidate, group, policy_namespace):
                    others, key, _ = group[0].fold_key
                    sort_key = (0, namespace or "", others, key, tuple(m.fold_key[2] for m in group))
                    entries.append(RulePeer(candidate, sort_key, tuple(group)))
                    continue
            entries.extend(RulePeer.of(peer) for peer in group)
        return entries
