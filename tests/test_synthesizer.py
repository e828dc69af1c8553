"""Synthesizer tests on a realistic learned microservices shop: a dozen services behind Services, a
PostgreSQL StatefulSet, a CronJob, replicas on three nodes, kube-dns, an ingress controller and
Prometheus in their own namespaces, an external payment API and SMTP relay with DNS names, kubelet
probes from the nodes, an unknown cluster IP and an idle workload."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

import kubernetes_validate
import pytest
import yaml

from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import ContainerPort
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.synthesizer import (
    LearnedEdge,
    LearnedInputs,
    LearnedWorkload,
    Options,
    PodView,
    choose_selector,
    newly_opened,
    render_yaml,
    synthesize,
    verify,
)
from netpol_gen.synthesizer.synthesize import policy_names
from netpol_gen.synthesizer.verify import LearnedCluster

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
NODES = {"node-a": ("10.0.0.11",), "node-b": ("10.0.0.12",), "node-c": ("10.0.0.13",)}


class Shop:
    """Builds workloads with realistic pods (volatile labels, named ports, spread over the nodes)."""

    def __init__(self) -> None:
        self.workloads: list[LearnedWorkload] = []
        self.edges: list[LearnedEdge] = []
        self._ip = 10

    def workload(self, namespace: str, kind: str, name: str, labels: Mapping[str, str], ports: Iterable[ContainerPort],
                 replicas: int = 1, selector: Mapping[str, str] | None = None) -> Identity:
        ports = tuple(ports)
        pods = []
        for i in range(replicas):
            volatile = {
                "Deployment": {"pod-template-hash": "7d9f8b6c5d"},
                "StatefulSet": {"controller-revision-hash": f"{name}-5c6d7",
                                "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                                "apps.kubernetes.io/pod-index": str(i)},
                "CronJob": {"job-name": f"{name}-2913{i}", "batch.kubernetes.io/job-name": f"{name}-2913{i}",
                            "controller-uid": f"1f2e-{i}", "batch.kubernetes.io/controller-uid": f"1f2e-{i}"},
                "DaemonSet": {"controller-revision-hash": "6b8d", "pod-template-generation": "3"},
            }.get(kind, {})
            self._ip += 1
            pods.append(PodView(
                name=f"{name}-{i}",
                labels={**labels, **volatile, "app.kubernetes.io/version": "1.4.2", "helm.sh/chart": f"{name}-0.3.1"},
                container_ports=ports,
                ips=(f"10.244.{self._ip // 250}.{self._ip % 250}",),
                node=sorted(NODES)[(self._ip + i) % 3],
            ))
        self.workloads.append(LearnedWorkload(namespace, kind, name, tuple(pods), selector))
        return Identity(IdentityKind.POD, namespace, kind, name)

    def edge(self, src: Identity, dst: Identity, port: int, protocol: str = "TCP", connections: int = 40) -> None:
        self.edges.append(LearnedEdge(src, dst, port, protocol, connections, T0, T0 + 86_400))

    def inputs(self) -> LearnedInputs:
        return LearnedInputs(
            workloads=tuple(self.workloads),
            edges=tuple(self.edges),
            namespace_labels={ns: {"kubernetes.io/metadata.name": ns}
                              for ns in ("shop", "ingress-nginx", "monitoring", "kube-system")},
            nodes=NODES,
            dns_names={"203.0.113.10": ("api.payments.example",), "203.0.113.11": ("api.payments.example",),
                       "198.51.100.25": ("smtp.mail.example",)},
        )


def grpc(port: int, name: str = "grpc") -> ContainerPort:
    return ContainerPort(port, "TCP", name)


METRICS = ContainerPort(9090, "TCP", "metrics")


def app(name: str, **extra: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", **extra}


def node(name: str) -> Identity:
    return Identity.of_node(name)


def external(ip: str) -> Identity:
    return Identity.of_address(IdentityKind.EXTERNAL, ip)


def build_shop() -> LearnedInputs:
    s = Shop()
    coredns = s.workload("kube-system", "Deployment", "coredns", {"k8s-app": "kube-dns"},
                         [ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"),
                          ContainerPort(9153, "TCP", "metrics")], replicas=2, selector={"k8s-app": "kube-dns"})
    nginx = s.workload("ingress-nginx", "Deployment", "ingress-nginx-controller",
                       {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
                       [ContainerPort(80, "TCP", "http"), ContainerPort(443, "TCP", "https")], replicas=2)
    prometheus = s.workload("monitoring", "StatefulSet", "prometheus", {"app.kubernetes.io/name": "prometheus"},
                            [ContainerPort(9090, "TCP", "web")])
    frontend = s.workload("shop", "Deployment", "frontend", app("frontend", track="stable"),
                          [ContainerPort(8080, "TCP", "http"), METRICS], replicas=3,
                          selector={"app.kubernetes.io/name": "frontend", "track": "stable"})
    canary = s.workload("shop", "Deployment", "frontend-canary", app("frontend", track="canary"),
                        [ContainerPort(8080, "TCP", "http"), METRICS])
    cart = s.workload("shop", "Deployment", "cart", app("cart"), [grpc(7070), METRICS], replicas=2)
    catalog = s.workload("shop", "Deployment", "catalog", app("catalog"), [grpc(3550), METRICS], replicas=2)
    checkout = s.workload("shop", "Deployment", "checkout", app("checkout"), [grpc(5050), METRICS], replicas=2)
    payment = s.workload("shop", "Deployment", "payment", app("payment"), [grpc(50051), METRICS], replicas=2)
    currency = s.workload("shop", "Deployment", "currency", app("currency"), [grpc(7000), METRICS], replicas=2)
    shipping = s.workload("shop", "Deployment", "shipping", app("shipping"), [grpc(50052), METRICS], replicas=2)
    email = s.workload("shop", "Deployment", "email", app("email"), [grpc(8081, "smtp-api"), METRICS])
    recommendation = s.workload("shop", "Deployment", "recommendation", app("recommendation"), [grpc(8082), METRICS],
                                replicas=2)
    ad = s.workload("shop", "Deployment", "ad", app("ad"), [grpc(9555), METRICS])
    redis = s.workload("shop", "StatefulSet", "redis-cart", app("redis-cart"), [ContainerPort(6379, "TCP", "redis")])
    postgres = s.workload("shop", "StatefulSet", "postgres", app("postgres"), [ContainerPort(5432, "TCP", "postgres")],
                          replicas=2, selector={"app.kubernetes.io/name": "postgres"})
    report = s.workload("shop", "CronJob", "sales-report", app("sales-report"), [], replicas=2)
    s.workload("shop", "Deployment", "legacy-admin", app("legacy-admin"), [ContainerPort(8000, "TCP", "http")])
    # shipping's pods disagree on the port's name (a half-finished template change): use the number
    index = next(i for i, w in enumerate(s.workloads) if w.name == "shipping")
    first, second = s.workloads[index].pods
    second = dataclasses.replace(second, container_ports=(grpc(50052, "rpc"), METRICS))
    s.workloads[index] = dataclasses.replace(s.workloads[index], pods=(first, second))

    s.edge(external("198.51.100.77"), nginx, 443)
    s.edge(external("198.51.100.78"), nginx, 443)
    s.edge(nginx, frontend, 8080)
    s.edge(nginx, canary, 8080)
    for probe_target, port in ((frontend, 8080), (canary, 8080), (checkout, 5050)):
        for name in NODES:
            s.edge(node(name), probe_target, port)
    for dst, port in ((cart, 7070), (catalog, 3550), (checkout, 5050), (currency, 7000), (recommendation, 8082),
                      (ad, 9555), (shipping, 50052)):
        s.edge(frontend, dst, port)
    for dst, port in ((cart, 7070), (catalog, 3550), (currency, 7000)):
        s.edge(canary, dst, port)
    for dst, port in ((cart, 7070), (catalog, 3550), (currency, 7000), (shipping, 50052), (email, 8081),
                      (payment, 50051)):
        s.edge(checkout, dst, port)
    s.edge(cart, redis, 6379)
    s.edge(recommendation, catalog, 3550)
    s.edge(catalog, postgres, 5432)
    s.edge(postgres, postgres, 5432)
    s.edge(report, postgres, 5432)
    s.edge(report, email, 8081)
    s.edge(payment, external("203.0.113.10"), 443)
    s.edge(payment, external("203.0.113.11"), 443)
    s.edge(email, external("198.51.100.25"), 587)
    for target in (frontend, canary, cart, catalog, checkout, payment, currency, shipping, email, recommendation, ad):
        s.edge(prometheus, target, 9090)
    s.edge(prometheus, coredns, 9153)
    for client in (frontend, canary, cart, catalog, checkout, payment, currency, shipping, email, recommendation, ad,
                   report, nginx, prometheus):
        s.edge(client, coredns, 53, "UDP")
    s.edge(payment, coredns, 53, "TCP")
    s.edge(Identity.of_address(IdentityKind.UNKNOWN, "10.244.9.9"), cart, 7070)
    return s.inputs()


@pytest.fixture(scope="module")
def shop() -> LearnedInputs:
    return build_shop()


@pytest.fixture(scope="module")
def result(shop: LearnedInputs):
    return synthesize(shop, measure_tightness=True)


def by_name(policies: list[dict], namespace: str, name: str) -> dict:
    return next(p for p in policies if p["metadata"]["namespace"] == namespace and p["metadata"]["name"] == name)


# --- the quality bar --------------------------------------------------------------------------------


def test_every_observed_edge_is_allowed_for_every_pod_pair(shop, result):
    verification = result.report.verification
    assert result.ok, [d.describe() for d in verification.denied]
    assert verification.judged > 2 * len(shop.edges)  # edges x pod pairs, not edges
    assert not verification.unjudged


def test_no_workload_pair_and_port_allowed_that_was_not_observed(shop, result):
    # nothing but the DNS fallback: a resolver seen on UDP 53 is also open on TCP 53
    assert result.report.opened, "the DNS-over-TCP companion rules open TCP 53 to the resolver"
    opened = {(o.connection.dst, o.connection.port, o.connection.protocol) for o in result.report.opened}
    assert opened == {("kube-system/Deployment/coredns", 53, "TCP")}
    strict = synthesize(shop, Options(dns_tcp=False), measure_tightness=True)
    assert strict.ok and strict.report.opened == []


def test_a_resolver_seen_on_udp_is_also_allowed_on_tcp_for_large_answers(shop, result):
    cart = by_name(result.policies, "shop", "cart-netpol-gen")
    dns_ports = [r["ports"] for r in cart["spec"]["egress"] if r["to"][0].get("namespaceSelector")]
    assert dns_ports == [[{"port": "dns-tcp", "protocol": "TCP"}, {"port": "dns", "protocol": "UDP"}]]
    learned = LearnedCluster(shop)
    (_, cart_pod), *_ = learned.endpoints(Identity(IdentityKind.POD, "shop", "Deployment", "cart"))
    (_, coredns_pod), *_ = learned.endpoints(Identity(IdentityKind.POD, "kube-system", "Deployment", "coredns"))
    evaluator = Evaluator(learned.cluster, [parse_policy(p) for p in result.policies])
    assert evaluator.judge(cart_pod, coredns_pod, 53, "TCP").allowed
    strict = synthesize(shop, Options(dns_tcp=False))
    strict_eval = Evaluator(learned.cluster, [parse_policy(p) for p in strict.policies])
    assert strict_eval.judge(cart_pod, coredns_pod, 53, "UDP").allowed
    assert not strict_eval.judge(cart_pod, coredns_pod, 53, "TCP").allowed


def test_policies_survive_a_pod_replaced_by_a_new_one(shop, result):
    """New pod name, new IP, new pod-template-hash, another node: the same policies still allow it all."""
    def replaced(workload: LearnedWorkload) -> LearnedWorkload:
        old = workload.pods[0]
        new = dataclasses.replace(
            old, name=f"{old.name}-x7k2p", ips=("10.244.7.201",), node="node-c",
            labels={**old.labels, "pod-template-hash": "55f6d8c9b"} if "pod-template-hash" in old.labels
            else old.labels)
        return dataclasses.replace(workload, pods=(new, *workload.pods[1:]))

    for target in ("frontend", "postgres", "sales-report", "checkout"):
        workloads = tuple(replaced(w) if w.name == target else w for w in shop.workloads)
        again = dataclasses.replace(shop, workloads=workloads)
        verification = verify(result.policies, again, Options())
        assert verification.ok, [d.describe() for d in verification.denied]
        assert verification.judged == result.report.verification.judged  # the new pod took the old one's place


def test_size_figures(result):
    report = result.report
    print(f"\nshop: {report.policies} policies, {report.rules} rules, {report.peers} peers, "
          f"{report.yaml_lines} YAML lines, {report.verification.judged} connections verified")
    # 14 shop workloads with traffic, nginx, prometheus; legacy-admin is idle, kube-system out of scope
    assert report.policies == 16
    assert report.yaml_lines == render_yaml(result.policies).count("\n")
    assert report.rules and report.peers >= report.rules


# --- selectors --------------------------------------------------------------------------------------


def selector(result, namespace: str, name: str) -> dict:
    return by_name(result.policies, namespace, f"{name}-netpol-gen")["spec"]["podSelector"]["matchLabels"]


def test_selectors_are_minimal_and_stable(result):
    assert selector(result, "shop", "cart") == {"app.kubernetes.io/name": "cart"}
    assert selector(result, "shop", "postgres") == {"app.kubernetes.io/name": "postgres"}
    assert selector(result, "shop", "sales-report") == {"app.kubernetes.io/name": "sales-report"}  # no job labels
    # frontend and its canary share app.kubernetes.io/name; the track alone tells them apart (smallest set)
    assert selector(result, "shop", "frontend") == {"track": "stable"}
    assert selector(result, "shop", "frontend-canary") == {"track": "canary"}
    assert selector(result, "ingress-nginx", "ingress-nginx-controller") == {"app.kubernetes.io/name": "ingress-nginx"}
    assert not result.report.warnings


def test_selector_prefers_app_over_other_labels():
    pods = (PodView("a-0", {"tier": "web", "app": "a", "pod-template-hash": "1"}),)
    other = LearnedWorkload("ns", "Deployment", "b", (PodView("b-0", {"tier": "db", "app": "b"}),))
    mine = LearnedWorkload("ns", "Deployment", "a", pods)
    assert choose_selector(mine, [mine, other]).match_labels == {"app": "a"}


def test_ambiguous_workloads_warn_and_use_all_stable_labels():
    labels = {"app": "web", "tier": "front", "pod-template-hash": "1"}
    a = LearnedWorkload("ns", "Deployment", "web", (PodView("web-0", labels),))
    b = LearnedWorkload("ns", "Deployment", "web-copy", (PodView("copy-0", {**labels, "extra": "x"}),))
    choice = choose_selector(a, [a, b])
    assert choice.match_labels == {"app": "web", "tier": "front"}
    assert choice.warning and "Deployment/web-copy" in choice.warning
    assert choose_selector(b, [a, b]).match_labels == {"extra": "x"}


def test_controller_selector_too_broad_is_widened_with_a_warning():
    a = LearnedWorkload("ns", "Deployment", "api", (PodView("api-0", {"app": "api", "role": "main"}),),
                        controller_selector={"app": "api"})
    b = LearnedWorkload("ns", "Deployment", "api-worker", (PodView("w-0", {"app": "api", "role": "worker"}),))
    choice = choose_selector(a, [a, b])
    assert choice.match_labels == {"role": "main"}
    assert choice.warning and "controller's selector" in choice.warning


def test_workload_whose_pods_share_no_label_gets_no_policy():
    a = LearnedWorkload("ns", "Pod", "bare", (PodView("bare", {}, ips=("10.244.0.5",)),))
    b = LearnedWorkload("ns", "Deployment", "b", (PodView("b-0", {"app": "b"}, ips=("10.244.0.6",)),))
    edge = LearnedEdge(Identity(IdentityKind.POD, "ns", "Pod", "bare"),
                       Identity(IdentityKind.POD, "ns", "Deployment", "b"), 80, "TCP")
    result = synthesize(LearnedInputs((a, b), (edge,)))
    assert [p["metadata"]["name"] for p in result.policies] == ["b-netpol-gen"]
    assert result.policies[0]["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]
    assert any("no selectable labels" in w for w in result.report.warnings)
    assert result.ok


# --- peers, ports, rules ----------------------------------------------------------------------------


def test_cross_namespace_peer_has_namespace_and_pod_selector_in_one_peer(result):
    ingress = by_name(result.policies, "shop", "frontend-netpol-gen")["spec"]["ingress"]
    peers = [peer for rule in ingress for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    } in peers


def test_nodes_and_externals_are_ip_blocks_with_notes(result):
    frontend = by_name(result.policies, "shop", "frontend-netpol-gen")
    rule = next(r for r in frontend["spec"]["ingress"] if {"ipBlock": {"cidr": "10.0.0.11/32"}} in r["from"])
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    # kubelet probes and the ingress controller share the port: one rule, peers sorted
    assert rule["from"][-3:] == [{"ipBlock": {"cidr": f"10.0.0.1{i}/32"}} for i in (1, 2, 3)]
    notes = json.loads(frontend["metadata"]["annotations"]["netpol-gen.io/ingress-ipblocks"])
    assert notes == {"10.0.0.11/32": "node node-a", "10.0.0.12/32": "node node-b", "10.0.0.13/32": "node node-c"}
    payment = by_name(result.policies, "shop", "payment-netpol-gen")
    assert json.loads(payment["metadata"]["annotations"]["netpol-gen.io/egress-ipblocks"]) == {
        "203.0.113.10/32": "api.payments.example", "203.0.113.11/32": "api.payments.example"}
    text = render_yaml([payment])
    assert "cidr: 203.0.113.10/32  # api.payments.example" in text
    assert not any("10.244." in json.dumps(p["spec"]) for p in result.policies)  # never a pod IP


def test_dns_is_an_ordinary_observed_edge(result):
    payment = by_name(result.policies, "shop", "payment-netpol-gen")
    kube_dns = {"matchLabels": {"k8s-app": "kube-dns"}}
    dns = [r for r in payment["spec"]["egress"] if r["to"][0].get("podSelector") == kube_dns]
    assert dns == [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": "dns-tcp", "protocol": "TCP"}, {"port": "dns", "protocol": "UDP"}],
    }]
    cart = by_name(result.policies, "shop", "cart-netpol-gen")
    udp = [p for r in cart["spec"]["egress"] for p in r["ports"] if p["protocol"] == "UDP"]
    assert udp == [{"port": "dns", "protocol": "UDP"}]


def test_peers_sharing_ports_share_a_rule_and_names_resolve_per_destination(result):
    egress = by_name(result.policies, "shop", "checkout-netpol-gen")["spec"]["egress"]
    grpc_rule = next(r for r in egress if r["ports"] == [{"port": "grpc", "protocol": "TCP"}])
    [peer] = grpc_rule["to"]  # four workloads folded into one peer
    [names] = peer["podSelector"]["matchExpressions"]
    assert names == {"key": "app.kubernetes.io/name", "operator": "In",
                     "values": ["cart", "catalog", "currency", "payment"]}  # 7070, 3550, 7000, 50051 on its own pods
    # shipping's pods disagree on the name: the number
    assert any(r["ports"] == [{"port": 50052, "protocol": "TCP"}] for r in egress)


def test_numbers_without_named_ports():
    shop = build_shop()
    result = synthesize(shop, Options(named_ports=False, dns_tcp=False))
    assert result.ok
    assert "port: grpc" not in render_yaml(result.policies)
    assert newly_opened(result.policies, shop) == []


def simple_egress(ports: Iterable[int], peers: Iterable[str]) -> LearnedInputs:
    pod = PodView("client-0", {"app": "client"}, ips=("10.244.0.2",))
    client = LearnedWorkload("ns", "Deployment", "client", (pod,))
    src = Identity(IdentityKind.POD, "ns", "Deployment", "client")
    edges = tuple(LearnedEdge(src, external(ip), port, "TCP") for ip in peers for port in ports)
    return LearnedInputs((client,), edges)


def test_contiguous_ports_become_a_range_only_when_asked():
    inputs = simple_egress([8000, 8001, 8002, 8003, 9000, 9001], ["192.0.2.1", "192.0.2.2"])
    ranged = synthesize(inputs, Options(port_range_min=3))
    [rule] = ranged.policies[0]["spec"]["egress"]
    assert rule["ports"] == [{"port": 8000, "endPort": 8003, "protocol": "TCP"}, {"port": 9000, "protocol": "TCP"},
                             {"port": 9001, "protocol": "TCP"}]
    assert rule["to"] == [{"ipBlock": {"cidr": "192.0.2.1/32"}}, {"ipBlock": {"cidr": "192.0.2.2/32"}}]
    assert ranged.ok
    [plain] = synthesize(inputs).policies[0]["spec"]["egress"]
    assert len(plain["ports"]) == 6


def test_peers_with_different_ports_get_different_rules():
    inputs = simple_egress([443], ["192.0.2.1"])
    inputs = dataclasses.replace(inputs, edges=(*inputs.edges, *simple_egress([80], ["192.0.2.9"]).edges))
    rules = synthesize(inputs).policies[0]["spec"]["egress"]
    assert rules == [{"to": [{"ipBlock": {"cidr": "192.0.2.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]},
                     {"to": [{"ipBlock": {"cidr": "192.0.2.9/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}]


def test_cidr_aggregate_folds_external_addresses_with_the_same_ports(shop):
    result = synthesize(shop, Options(cidr_aggregate=24))
    payment = by_name(result.policies, "shop", "payment-netpol-gen")
    blocks = [p for r in payment["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert blocks == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    notes = json.loads(payment["metadata"]["annotations"]["netpol-gen.io/egress-ipblocks"])
    assert notes == {"203.0.113.0/24": "203.0.113.10 api.payments.example; 203.0.113.11 api.payments.example"}
    assert result.ok


def test_ipv6_external_is_a_128():
    client = LearnedWorkload("ns", "Deployment", "client", (PodView("client-0", {"app": "client"}, ips=("fd00::2",)),))
    edge = LearnedEdge(Identity(IdentityKind.POD, "ns", "Deployment", "client"), external("2001:db8::5"), 443, "TCP")
    result = synthesize(LearnedInputs((client,), (edge,)))
    assert result.policies[0]["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "2001:db8::5/128"}}]
    assert result.ok and result.report.verification.judged == 1


# --- unknown addresses, idle workloads, options ----------------------------------------------------


def test_unknown_cluster_ip_is_reported_and_left_out(result):
    assert result.report.unknown_ips == ["10.244.9.9"]
    assert [lo.reason for lo in result.report.left_out] == ["unknown cluster IP (include_unknown to allow it)"]
    assert "10.244.9.9" not in render_yaml(result.policies)


def test_unknown_cluster_ip_included_on_request(shop):
    result = synthesize(shop, Options(include_unknown=True))
    cart = by_name(result.policies, "shop", "cart-netpol-gen")
    assert {"ipBlock": {"cidr": "10.244.9.9/32"}} in [p for r in cart["spec"]["ingress"] for p in r["from"]]
    assert result.ok and not result.report.unknown_ips


def test_idle_workload_gets_no_policy_unless_asked(shop, result):
    assert result.report.idle == ["shop/Deployment/legacy-admin"]
    assert "legacy-admin-netpol-gen" not in [p["metadata"]["name"] for p in result.policies]
    isolated = synthesize(shop, Options(isolate_idle=True))
    spec = by_name(isolated.policies, "shop", "legacy-admin-netpol-gen")["spec"]
    assert spec == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "legacy-admin"}},
                    "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}


def test_direction_without_traffic_stays_closed(result):
    spec = by_name(result.policies, "shop", "sales-report-netpol-gen")["spec"]  # a CronJob: client only
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == [] and spec["egress"]


def test_default_deny_per_namespace_in_scope(shop):
    result = synthesize(shop, Options(default_deny=True))
    deny = [p for p in result.policies if p["metadata"]["name"] == "netpol-gen-default-deny"]
    assert [p["metadata"]["namespace"] for p in deny] == ["ingress-nginx", "monitoring", "shop"]
    assert deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    assert result.ok  # the per-workload policies still allow every observed edge


def test_ingress_only_and_egress_only(shop):
    ingress = synthesize(shop, Options(ingress_only=True))
    assert all(p["spec"]["policyTypes"] == ["Ingress"] and "egress" not in p["spec"] for p in ingress.policies)
    egress = synthesize(shop, Options(egress_only=True))
    assert all(p["spec"]["policyTypes"] == ["Egress"] and "ingress" not in p["spec"] for p in egress.policies)
    assert ingress.ok and egress.ok
    with pytest.raises(ValueError):
        Options(ingress_only=True, egress_only=True)


def test_namespace_scope(shop):
    only_shop = synthesize(shop, Options(namespaces=frozenset({"shop"})))
    assert {p["metadata"]["namespace"] for p in only_shop.policies} == {"shop"}
    with_system = synthesize(shop, Options(exclude_namespaces=frozenset()))
    coredns = by_name(with_system.policies, "kube-system", "coredns-netpol-gen")
    # one rule per port set: UDP+TCP 53 (13 clients: TCP as the DNS fallback), UDP+TCP 53 + metrics (prometheus);
    # the 12 clients in namespace shop are two folded peers (ten app names, two tracks of the frontend)
    clients = [[len(e["values"]) for e in peer["podSelector"].get("matchExpressions", [{"values": [0]}])]
               for rule in coredns["spec"]["ingress"] for peer in rule["from"]]
    assert [len(rule["from"]) for rule in coredns["spec"]["ingress"]] == [3, 1]
    assert clients == [[1], [10], [2], [1]]
    assert with_system.ok


def test_min_connections_and_window_leave_edges_out(shop):
    rare = dataclasses.replace(shop.edges[0], connections=1, first_seen=T0 - 10 * 86_400, last_seen=T0 - 9 * 86_400)
    inputs = dataclasses.replace(shop, edges=(rare, *shop.edges[1:]))
    for options in (Options(min_connections=2), Options(since=T0 - 86_400)):
        result = synthesize(inputs, options)
        assert result.report.filtered_edges == 1
        nginx = by_name(result.policies, "ingress-nginx", "ingress-nginx-controller-netpol-gen")
        assert [p for r in nginx["spec"]["ingress"] for p in r["from"]] == [{"ipBlock": {"cidr": "198.51.100.78/32"}}]


def test_metadata(result):
    meta = by_name(result.policies, "shop", "cart-netpol-gen")["metadata"]
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "netpol-gen"}
    assert meta["annotations"]["netpol-gen.io/learned-since"] == "2025-11-24T16:00:00Z"
    assert meta["annotations"]["netpol-gen.io/learned-until"] == "2025-11-25T16:00:00Z"
    assert meta["annotations"]["netpol-gen.io/generated-by"].startswith("netpol-gen ")
    assert meta["annotations"]["netpol-gen.io/workload"] == "Deployment/cart"


def test_names_are_stable_unique_and_valid():
    def w(kind: str, name: str) -> LearnedWorkload:
        return LearnedWorkload("ns", kind, name, ())
    long = "a" * 250
    names = policy_names([w("Deployment", "web"), w("StatefulSet", "web"), w("Deployment", "api"),
                          w("Deployment", long), w("StatefulSet", long)])
    assert names[("ns", "Deployment", "web")] == "web-deployment-netpol-gen"
    assert names[("ns", "StatefulSet", "web")] == "web-statefulset-netpol-gen"
    assert names[("ns", "Deployment", "api")] == "api-netpol-gen"
    long_names = [names[("ns", k, long)] for k in ("Deployment", "StatefulSet")]
    assert all(len(n) <= 253 and n.endswith("-netpol-gen") for n in long_names) and len(set(long_names)) == 2


# --- output -----------------------------------------------------------------------------------------


def test_every_policy_validates_against_the_api_schema_and_parses(shop):
    result = synthesize(shop, Options(default_deny=True, isolate_idle=True, include_unknown=True, port_range_min=2))
    for policy in result.policies:
        kubernetes_validate.validate(policy, "1.31.0", strict=True)
        parse_policy(policy)
    assert list(yaml.safe_load_all(render_yaml(result.policies))) == result.policies


def test_output_is_deterministic_whatever_the_input_order(shop, result):
    shuffled = dataclasses.replace(shop, workloads=tuple(reversed(shop.workloads)), edges=tuple(reversed(shop.edges)))
    assert render_yaml(synthesize(shuffled).policies) == render_yaml(result.policies)


def test_verification_catches_a_missing_rule(shop, result):
    broken = [json.loads(json.dumps(p)) for p in result.policies]
    cart = by_name(broken, "shop", "cart-netpol-gen")
    cart["spec"]["egress"] = []
    verification = verify(broken, shop, Options())
    assert not verification.ok
    assert {d.edge.describe() for d in verification.denied} == {
        "shop/Deployment/cart -> shop/StatefulSet/redis-cart 6379/TCP",
        "shop/Deployment/cart -> kube-system/Deployment/coredns 53/UDP",
    }
    # cart pods x redis pod, cart pods x coredns pods: each edge judged once, for all its pairs alike
    assert len(verification.denied) == 2
    assert sum(d.pairs for d in verification.denied) == 2 * 1 + 2 * 2


def test_orphan_traffic_rides_on_the_policy_that_selects_its_pods():
    """Found by the property test: ``w0`` cannot be selected apart (its pods share no label) yet one of
    its pods carries ``app: x``, so ``w1``'s policy isolates it; that policy must allow w0's traffic,
    and no default-deny may cut off the rest of w0."""
    w0 = LearnedWorkload("ns", "Deployment", "w0", (PodView("w0-0", {}, ips=("10.244.0.1",)),
                                                     PodView("w0-1", {"app": "x"}, ips=("10.244.0.2",))))
    w1 = LearnedWorkload("ns", "Deployment", "w1", (PodView("w1-0", {"app": "x"}, ips=("10.244.0.3",)),),
                         controller_selector={"app": "x"})
    edge = LearnedEdge(Identity(IdentityKind.POD, "ns", "Deployment", "w0"),
                       Identity(IdentityKind.POD, "ns", "Deployment", "w1"), 80, "TCP")
    result = synthesize(LearnedInputs((w0, w1), (edge,)), Options(default_deny=True))
    assert result.ok
    assert [p["metadata"]["name"] for p in result.policies] == ["w1-netpol-gen"]
    warnings = "\n".join(result.report.warnings)
    assert "also allows the traffic of ns/Deployment/w0" in warnings
    assert "namespace ns: no default-deny policy" in warnings


def test_job_selector_on_controller_uid_falls_back_to_the_labels_its_runs_share():
    runs = tuple(PodView(f"backup-2913{i}-x", {"app": "backup", "job-name": f"backup-2913{i}",
                                               "batch.kubernetes.io/controller-uid": f"u{i}"}) for i in range(3))
    job = LearnedWorkload("ns", "CronJob", "backup", runs,
                          controller_selector={"batch.kubernetes.io/controller-uid": "u2"})
    other = LearnedWorkload("ns", "Deployment", "api", (PodView("api-0", {"app": "api"}),))
    assert choose_selector(job, [job, other]).match_labels == {"app": "backup"}
