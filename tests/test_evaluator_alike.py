"""Connections whose ends are alike share one judgement (``Evaluator.judge_alike``), but only where
nothing a side can see tells them apart: these pin the two things of a pod that its labels do not
carry and that a side still looks at, its node (own-node traffic) and its identity (a pod reaching
itself, also through its own Service), by judging the alike connection after the one it must not
copy. In-memory model objects stand in for a snapshot; the verdicts are the evaluator's own."""

from __future__ import annotations

import pytest

from netpol_gen.evaluator import Basis, Evaluator, parse_policy
from netpol_gen.model import Cluster, Namespace, Node, Pod, Workload
from netpol_gen.model.cluster import Backend, Endpoint, EndpointKind, Service, ServicePort, ServiceTarget

DENY_ALL = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}


def _pod(name: str, ip: str, node: str) -> Pod:
    return Pod(namespace="shop", name=name, uid=name, labels={"app": "web"}, ips=(ip,),
               workload=Workload("Deployment", "web"), node_name=node)


@pytest.fixture
def evaluator() -> Evaluator:
    pods = [_pod("web-1", "10.0.1.1", "node-1"), _pod("web-2", "10.0.2.1", "node-2")]
    nodes = [Node("node-1", ("172.16.0.1",), ("10.0.1.0/24",)), Node("node-2", ("172.16.0.2",), ("10.0.2.0/24",))]
    cluster = Cluster.build(namespaces=[Namespace("shop", {})], pods=pods, nodes=nodes)
    return Evaluator(cluster, [parse_policy(DENY_ALL)])


def test_alike_pods_on_other_nodes_do_not_share_the_own_node_exception(evaluator: Evaluator) -> None:
    node_1 = evaluator.cluster.endpoint("172.16.0.1")
    on_node_1, on_node_2 = evaluator.cluster.endpoint("10.0.1.1"), evaluator.cluster.endpoint("10.0.2.1")
    first = evaluator.judge(on_node_1, node_1, 10250, "TCP")
    second = evaluator.judge(on_node_2, node_1, 10250, "TCP")
    assert (first.egress.basis, first.allowed) == (Basis.OWN_NODE, True)
    assert (second.egress.basis, second.allowed) == (Basis.NO_RULE, False)
    # and the other way round: the node reaching the pods
    assert evaluator.judge(node_1, on_node_1, 8080, "TCP").ingress.basis is Basis.OWN_NODE
    assert evaluator.judge(node_1, on_node_2, 8080, "TCP").ingress.basis is Basis.NO_RULE


def test_a_pod_reaching_itself_is_not_judged_as_its_alike_peer(evaluator: Evaluator) -> None:
    web_1, web_2 = evaluator.cluster.endpoint("10.0.1.1"), evaluator.cluster.endpoint("10.0.2.1")
    assert not evaluator.judge(web_2, web_1, 8080, "TCP").allowed
    itself = evaluator.judge(web_1, web_1, 8080, "TCP")
    assert (itself.egress.basis, itself.ingress.basis) == (Basis.SAME_POD, Basis.SAME_POD)


def test_a_backend_reaching_its_own_service_is_judged_apart_from_an_alike_client(evaluator: Evaluator) -> None:
    service = Service("shop", "web", {"app": "web"}, (ServicePort(80, "TCP", target_port=8080),), ("10.96.0.10",))
    web_1, web_2 = (next(p for p in evaluator.cluster.pods if p.name == n) for n in ("web-1", "web-2"))
    target = ServiceTarget(service, service.ports[0], (Backend(web_1, 8080),))
    client = Endpoint("10.0.2.1", EndpointKind.POD, pod=web_2)
    backend = Endpoint("10.0.1.1", EndpointKind.POD, pod=web_1)
    from_client = evaluator.judge_alike(client, target, None, "10.96.0.10", 80, "TCP")
    from_itself = evaluator.judge_alike(backend, target, None, "10.96.0.10", 80, "TCP")
    assert [j.allowed for j in from_client] == [False]
    assert [(j.egress.basis, j.ingress.basis) for j in from_itself] == [(Basis.SAME_POD, Basis.SAME_POD)]
    # a second alike client shares the first one's judgement: one object, judged once
    other = Endpoint("10.0.2.1", EndpointKind.POD, pod=web_2)
    assert evaluator.judge_alike(other, target, None, "10.96.0.10", 80, "TCP") is from_client
