"""``export --baseline``: the egress that workloads of several namespaces do exactly alike (typically
DNS to the observed resolver and nothing else, or that plus a shared collector) as one cluster-scoped
Baseline-tier ClusterNetworkPolicy (``policy.networking.k8s.io/v1alpha2``), so the policies of those
workloads need no egress section.

Why egress only, and why only workloads that do exactly the common egress: the Baseline tier is
judged after the NetworkPolicies, and a pod that some NetworkPolicy isolates for a direction is
decided there (allowed by a rule or denied), so a Baseline rule never reaches it. A workload's egress
can be left to the Baseline tier only by leaving egress out of its policy; the Baseline then allows
the common egress and denies every other (``Deny`` to all pods and to ``0.0.0.0/0``, ``::/0``,
which the API text says also match pod addresses). For ingress the Baseline tier cannot do that:
its ingress peers are pods and namespaces only, so it could not deny sources outside the cluster,
and leaving ingress out of a policy would open it to them. A workload's egress moves to the
Baseline only when it is exactly the common egress (peers, protocols and port numbers), so every
workload is allowed what it was allowed without ``--baseline``: the policies get shorter, not wider.

The common egress is the egress set (destinations: pods of a namespace with the same labels, or an
address; protocols and port numbers) that the most workloads have exactly, in two namespaces at
least; the subject is those workloads' namespaces by name. Its other workloads keep their egress
in their NetworkPolicy (isolated there, the Baseline never reaches them); those without a policy
(idle) get their egress closed to the common egress by the Baseline's Deny (reported).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netpol_gen.model.cluster import METADATA_NAME_LABEL
from netpol_gen.model.learned import WorkloadKey
from netpol_gen.synthesizer.peers import PeerRef

API_VERSION = "policy.networking.k8s.io/v1alpha2"
KIND = "ClusterNetworkPolicy"
NAME = "netpol-gen-baseline"
PRIORITY = 100  # any of 0-1000: the set has one Baseline policy
EVERY_ADDRESS = ["0.0.0.0/0", "::/0"]


@dataclass(frozen=True, order=True, slots=True)
class Destination:
    """An egress peer independent of the policy's namespace: pods with ``labels`` in ``namespace``,
    or the addresses ``cidr``."""

    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    cidr: str = ""

    def render(self) -> dict[str, Any]:
        if self.cidr:
            return {"networks": [self.cidr]}
        return {"pods": {"namespaceSelector": {"matchLabels": {METADATA_NAME_LABEL: self.namespace}},
                         "podSelector": {"matchLabels": dict(self.labels)} if self.labels else {}}}


Item = tuple[Destination, str, int]  # (destination, protocol, port number)


def egress_items(observed: Mapping[PeerRef, Iterable[tuple[str, int]]], namespace: str) -> frozenset[Item]:
    """A workload's egress in ``namespace`` (peer -> observed (protocol, port number)) as items."""
    items: set[Item] = set()
    for peer, numbers in observed.items():
        destination = (Destination(cidr=peer.cidr) if peer.cidr is not None
                       else Destination(peer.namespace or namespace, peer.labels))
        items.update((destination, protocol, port) for protocol, port in numbers)
    return frozenset(items)


def common_egress(egress: Mapping[WorkloadKey, frozenset[Item]]) -> tuple[frozenset[Item], list[str]]:
    """The egress that the most workloads do exactly alike, in two namespaces at least (ties: more
    namespaces, then fewer items), and those workloads' namespaces; nothing when no egress is shared."""
    groups: dict[frozenset[Item], list[WorkloadKey]] = defaultdict(list)
    for key, items in egress.items():
        if items:
            groups[items].append(key)
    candidates = [(len(keys), len(namespaces), -len(items), sorted(items), items, namespaces)
                  for items, keys in groups.items() if len(namespaces := sorted({k[0] for k in keys})) >= 2]
    if not candidates:
        return frozenset(), []
    *_, items, namespaces = max(candidates)
    return items, namespaces


def _protocol(protocol: str, port: int) -> dict[str, Any]:
    return {protocol.lower(): {"destinationPort": {"number": port}}}


def baseline_policy(common: frozenset[Item], namespaces: Iterable[str],
                    annotations: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, Any]:
    """The Baseline-tier policy: one Accept rule per common destination, then Deny for the rest."""
    by_destination: dict[Destination, list[tuple[str, int]]] = {}
    for destination, protocol, port in sorted(common):
        by_destination.setdefault(destination, []).append((protocol, port))
    rules: list[dict[str, Any]] = [
        {"action": "Accept", "to": [destination.render()],
         "protocols": [_protocol(protocol, port) for protocol, port in ports]}
        for destination, ports in by_destination.items()
    ]
    rules.append({"action": "Deny", "to": [{"namespaces": {}}, {"networks": list(EVERY_ADDRESS)}]})
    subject = {"namespaces": {"matchExpressions": [
        {"key": METADATA_NAME_LABEL, "operator": "In", "values": sorted(namespaces)}]}}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "labels": dict(labels), "annotations": dict(annotations)},
        "spec": {"tier": "Baseline", "priority": PRIORITY, "subject": subject, "egress": rules},
    }
