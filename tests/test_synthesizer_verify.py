"""Verification by equivalence classes, and node peers that only the own-node rule needs.

Each verification test breaks a policy set so that exactly one pod of a replicated workload is denied
while its siblings are allowed, along one of the dimensions the classes are made of (address, labels,
container ports, node): a verifier that judged one pod for the whole workload would miss it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import ContainerPort
from netpol_gen.model.cluster import Endpoint, EndpointKind
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.synthesizer import LearnedEdge, LearnedInputs, LearnedWorkload, Options, PodView, synthesize, verify
from netpol_gen.synthesizer.verify import LearnedCluster

NODES = {"node-a": ("10.0.0.11",), "node-b": ("10.0.0.12",), "node-c": ("10.0.0.13",)}
WEB = Identity(IdentityKind.POD, "shop", "Deployment", "web")
API = Identity(IdentityKind.POD, "shop", "Deployment", "api")
HTTP = ContainerPort(8080, "TCP", "http")


def pods(name: str, count: int, common: dict[str, str], first_ip: int, **last: Any) -> tuple[PodView, ...]:
    """``count`` alike pods, one per node in turn; ``last`` replaces fields of the last one."""
    views = [PodView(f"{name}-{i}", common, (HTTP,), (f"10.244.0.{first_ip + i}",), sorted(NODES)[i % 3])
             for i in range(count)]
    views[-1] = dataclasses.replace(views[-1], **last)
    return tuple(views)


def shop(api_pods: tuple[PodView, ...], *edges: LearnedEdge) -> LearnedInputs:
    workloads = (LearnedWorkload("shop", "Deployment", "web", pods("web", 3, {"app": "web"}, 10)),
                 LearnedWorkload("shop", "Deployment", "api", api_pods))
    return LearnedInputs(workloads, edges or (LearnedEdge(WEB, API, 8080, "TCP", 10),), nodes=NODES)


def web_egress(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": list(rules)}}


def denied_pods(policies: list[dict[str, Any]], inputs: LearnedInputs) -> tuple[int, int]:
    """(denied pairs, pairs judged) as verification reports them."""
    verification = verify(policies, inputs, Options())
    return sum(d.pairs for d in verification.denied), verification.judged


def test_an_ip_block_that_excepts_one_pod_is_caught() -> None:
    inputs = shop(pods("api", 4, {"app": "api"}, 20))
    block = {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.0.23/32"]}}]}
    assert denied_pods([web_egress(block)], inputs) == (3, 12)  # the 3 web pods to api-3 only


def test_a_pod_whose_labels_a_selector_does_not_match_is_caught() -> None:
    inputs = shop(pods("api", 4, {"app": "api", "track": "stable"}, 20, labels={"app": "api", "track": "canary"}))
    rule = {"to": [{"podSelector": {"matchLabels": {"track": "stable"}}}]}
    assert denied_pods([web_egress(rule)], inputs) == (3, 12)


def test_a_pod_on_which_a_named_port_resolves_elsewhere_is_caught() -> None:
    inputs = shop(pods("api", 4, {"app": "api"}, 20, container_ports=(ContainerPort(9090, "TCP", "http"),
                                                                      ContainerPort(8080, "TCP", "web"))))
    rule = {"to": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": "http"}]}
    assert denied_pods([web_egress(rule)], inputs) == (3, 12)


def test_a_pod_that_needs_the_node_ip_block_is_caught() -> None:
    """node-a reaches web's pods on every node; only web-0 runs on node-a, the others need the ipBlock."""
    probe = LearnedEdge(Identity.of_node("node-a"), WEB, 8080, "TCP", 30, pod_nodes=frozenset(NODES))
    inputs = shop(pods("api", 1, {"app": "api"}, 20), probe)
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": []}}
    assert denied_pods([ingress], inputs) == (2, 3)


def test_replicas_are_judged_once_per_class() -> None:
    inputs = shop(pods("api", 10, {"app": "api"}, 20))
    result = synthesize(inputs)
    assert result.ok
    assert result.report.verification.judged == 3 * 10
    assert result.report.verification.evaluated == 1


# --- node peers the own-node rule covers -------------------------------------------------------------


def probes(*pairs: tuple[str, str]) -> tuple[LearnedEdge, ...]:
    """Edges node -> web with the nodes of the pods each node's flows reached."""
    by_node: dict[str, set[str | None]] = {}
    for node, pod_node in pairs:
        by_node.setdefault(node, set()).add(pod_node)
    return tuple(LearnedEdge(Identity.of_node(node), WEB, 8080, "TCP", 100, pod_nodes=frozenset(seen))
                 for node, seen in sorted(by_node.items()))


def judge_from_node(policies: list[dict[str, Any]], inputs: LearnedInputs, node: str, pod_name: str) -> bool:
    learned = LearnedCluster(inputs)
    evaluator = Evaluator(learned.cluster, [parse_policy(p) for p in policies])
    pod = next(p for p in learned.pods[("shop", "Deployment", "web")] if p.name == pod_name)
    src = Endpoint(NODES[node][0], EndpointKind.NODE, node=learned.nodes[node])
    return evaluator.judge(src, Endpoint(pod.ips[0], EndpointKind.POD, pod=pod), 8080, "TCP").allowed


def test_kubelet_probes_from_each_pods_own_node_write_no_ip_block() -> None:
    inputs = shop(pods("api", 1, {"app": "api"}, 20),
                  LearnedEdge(API, WEB, 8080, "TCP", 10), *probes(("node-a", "node-a"), ("node-b", "node-b"),
                                                                 ("node-c", "node-c")))
    result = synthesize(inputs)
    assert result.ok
    web = next(p for p in result.policies if p["metadata"]["name"] == "web-netpol-gen")
    assert web["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                                       "ports": [{"port": "http", "protocol": "TCP"}]}]
    assert "netpol-gen.io/ingress-ipblocks" not in web["metadata"]["annotations"]
    assert [e.src.node for e in result.report.own_node] == ["node-a", "node-b", "node-c"]
    # the evaluator lets each node probe the pod it runs, and nothing else from a node
    assert judge_from_node(result.policies, inputs, "node-a", "web-0")
    assert judge_from_node(result.policies, inputs, "node-b", "web-1")
    assert not judge_from_node(result.policies, inputs, "node-b", "web-0")
    assert result.report.verification.judged == 3 + 3  # api -> 3 web pods; each node -> its one web pod


def test_cross_node_host_traffic_keeps_its_node_ip_block() -> None:
    """node-c is also an ingress controller on the host network reaching web pods on other nodes."""
    inputs = shop(pods("api", 1, {"app": "api"}, 20),
                  *probes(("node-a", "node-a"), ("node-c", "node-c"), ("node-c", "node-a"), ("node-c", None)))
    result = synthesize(inputs)
    assert result.ok
    web = next(p for p in result.policies if p["metadata"]["name"] == "web-netpol-gen")
    assert web["spec"]["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.0.0.13/32"}}],
                                       "ports": [{"port": "http", "protocol": "TCP"}]}]
    assert [e.src.node for e in result.report.own_node] == ["node-a"]
    assert judge_from_node(result.policies, inputs, "node-c", "web-0")
    assert not judge_from_node(result.policies, inputs, "node-b", "web-0")


def test_node_edges_without_per_pod_evidence_keep_their_ip_block() -> None:
    inputs = shop(pods("api", 1, {"app": "api"}, 20), LearnedEdge(Identity.of_node("node-a"), WEB, 8080, "TCP"))
    result = synthesize(inputs)
    web = next(p for p in result.policies if p["metadata"]["name"] == "web-netpol-gen")
    assert web["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.11/32"}}]
    assert result.ok and not result.report.own_node
