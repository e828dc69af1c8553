"""Learned inputs that stand for the traffic hand-written policies of public apps allow between their
workloads (../shared/reference-policies), so the synthesizer's output can be compared with them.

From one file of policies: a workload per distinct ``matchLabels`` pod selector (a policy's subject, or
an ingress peer that selects no subject's pods; two replicas each), declaring the ports of the ingress
rules that select it; then an edge for every workload pair x declared port that the file's policies
let in through a rule peer with a pod selector. Traffic that the file admits only from any pod, a
namespace or an address range is left out on both sides of the comparison: no observed pod stands for
it. ``reference_peers`` counts the pod-selector peers of the ingress rules, the peers that cover that
traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netpol_gen.evaluator import Evaluator, load_policies
from netpol_gen.evaluator.policy import NetworkPolicy, Peer
from netpol_gen.model import ContainerPort
from netpol_gen.model.cluster import METADATA_NAME_LABEL, Endpoint, EndpointKind
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import LearnedEdge, LearnedInputs, LearnedWorkload, PodView
from netpol_gen.synthesizer.selectors import ordered_keys
from netpol_gen.synthesizer.verify import LearnedCluster

# ../shared/reference-policies of the checkout (of /work/main) or of any folder above it (a worktree's)
REFERENCE = next((d / "shared" / "reference-policies" for d in Path(__file__).resolve().parents[1:]
                  if (d / "shared" / "reference-policies").is_dir()),
                 Path(__file__).resolve().parents[2] / "shared" / "reference-policies")
APPS = ("argocd", "calico-stars", "cilium-starwars", "kube-prometheus", "online-boutique", "sock-shop.fixed")


@dataclass(frozen=True)
class ReferenceApp:
    name: str
    inputs: LearnedInputs
    reference_peers: int  # pod-selector peers of the hand-written ingress rules


def _labels(selector: Any) -> dict[str, str] | None:
    """The matchLabels of a selector that has nothing else, else None."""
    if selector is None or selector.is_empty or any(r.operator != "In" or len(r.values) != 1
                                                    for r in selector.requirements):
        return None
    return {r.key: next(iter(r.values)) for r in selector.requirements}


def _peer_namespace(peer: Peer, policy: NetworkPolicy) -> str | None:
    if peer.namespace_selector is None:
        return policy.namespace
    labels = _labels(peer.namespace_selector)
    return labels.get(METADATA_NAME_LABEL) if labels is not None and len(labels) == 1 else None


def _pod_peers(policy: NetworkPolicy) -> list[tuple[str, dict[str, str]]]:
    found = []
    for rule in policy.ingress:
        for peer in rule.peers:
            labels, namespace = _labels(peer.pod_selector), _peer_namespace(peer, policy)
            if labels is not None and namespace is not None:
                found.append((namespace, labels))
    return found


def _workloads(policies: list[NetworkPolicy]) -> dict[tuple[str, str], dict[str, str]]:
    """(namespace, name) -> labels: the subjects, then the peers that select none of them."""
    workloads: dict[tuple[str, str], dict[str, str]] = {}

    def add(namespace: str, labels: Mapping[str, str]) -> None:
        if any(ns == namespace and labels.items() <= known.items() for (ns, _), known in workloads.items()):
            return
        name = labels[ordered_keys(labels)[0]]
        workloads[(namespace, name)] = dict(labels)

    for policy in policies:
        labels = _labels(policy.pod_selector)
        if labels is not None:
            add(policy.namespace, labels)
    for policy in policies:
        for namespace, labels in _pod_peers(policy):
            add(namespace, labels)
    return workloads


def _declared_ports(policies: list[NetworkPolicy], namespace: str, labels: Mapping[str, str]) -> list[ContainerPort]:
    ports = {(spec.port, spec.protocol) for policy in policies
             if policy.namespace == namespace and policy.pod_selector.matches(labels)
             for rule in policy.ingress for spec in rule.ports if isinstance(spec.port, int)}
    return [ContainerPort(port, protocol) for port, protocol in sorted(ports)]


def build(name: str, directory: Path = REFERENCE) -> ReferenceApp:
    """The scenario of ``directory/name.yaml`` (see the module docstring)."""
    policies = load_policies([str(directory / f"{name}.yaml")])
    workloads, ip = [], 0
    for (namespace, workload), labels in sorted(_workloads(policies).items()):
        ports = tuple(_declared_ports(policies, namespace, labels))
        pods = []
        for replica in range(2):
            ip += 1
            pods.append(PodView(f"{workload}-{replica}", {**labels, "pod-template-hash": "h1"}, ports,
                                (f"10.244.{ip // 250}.{ip % 250 + 1}",), "node-1"))
        workloads.append(LearnedWorkload(namespace, "Deployment", workload, tuple(pods), labels))
    namespaces = sorted({w.namespace for w in workloads} | {p.namespace for p in policies})
    inputs = LearnedInputs(tuple(workloads), (), namespace_labels={ns: {} for ns in namespaces})
    learned = LearnedCluster(inputs)
    evaluator = Evaluator(learned.cluster, policies)
    by_key = {p.key: p for p in policies}
    edges = []
    for src in workloads:
        for dst in workloads:
            client, server = learned.pods[src.key][0], learned.pods[dst.key][1]
            a = Endpoint(client.ips[0], EndpointKind.POD, pod=client)
            b = Endpoint(server.ips[0], EndpointKind.POD, pod=server)
            for port in dst.pods[0].container_ports:
                side = evaluator.judge(a, b, port.port, port.protocol).ingress
                if any(peer.pod_selector is not None and not peer.pod_selector.is_empty
                       and evaluator.peer_matches(peer, ref.policy.split("/")[0], a)
                       for ref in side.admitted_by for peer in by_key[ref.policy].ingress[ref.index].peers):
                    edges.append(LearnedEdge(Identity(IdentityKind.POD, src.namespace, src.kind, src.name),
                                             Identity(IdentityKind.POD, dst.namespace, dst.kind, dst.name),
                                             port.port, port.protocol, connections=10))
    reference_peers = sum(1 for p in policies for rule in p.ingress for peer in rule.peers
                          if peer.pod_selector is not None and not peer.pod_selector.is_empty)
    return ReferenceApp(name, LearnedInputs(inputs.workloads, tuple(edges), inputs.namespace_labels), reference_peers)
