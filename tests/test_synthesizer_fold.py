"""Exact folding of peers and ports (issue #14): a folded set judges every connection as the unfolded
set does (every observed edge, every endpoint pair x every observed and declared port), on the bundled
example, a gen_cluster scenario and generated graphs; folds are stable when a workload is added; the
namespace fold is opt-in, reported, and admits later workloads (which is why it is opt-in)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import gen_cluster, reference_apps
from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import ContainerPort
from netpol_gen.model.cluster import Endpoint, EndpointKind, Pod, Workload
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.store.db import open_store
from netpol_gen.store.learned import load_learned
from netpol_gen.synthesizer import LearnedEdge, LearnedInputs, LearnedWorkload, Options, PodView, synthesize
from netpol_gen.synthesizer.fold import PodPopulation
from netpol_gen.synthesizer.peers import PeerRef
from netpol_gen.synthesizer.render import render_yaml
from netpol_gen.synthesizer.verify import LearnedCluster
from tests.cli import run_cli
from tests.test_synthesizer_properties import learned_graphs
from tests.test_synthesizer_properties import options as any_options

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ticket-booking"
UNFOLDED = Options(fold=False)


def verdicts(policies: list[dict[str, Any]], inputs: LearnedInputs) -> dict[tuple[str, str, int, str], bool]:
    """Allowed or not, for every endpoint pair of the learned cluster (every pod, node address and
    address seen in an edge) x every port seen in an edge and every port the destination declares."""
    learned = LearnedCluster(inputs)
    evaluator = Evaluator(learned.cluster, [parse_policy(p) for p in policies])
    identities = {end for edge in inputs.edges for end in (edge.src, edge.dst)}
    identities |= {Identity(IdentityKind.POD, w.namespace, w.kind, w.name) for w in inputs.workloads}
    endpoints = [e for identity in identities for e in learned.endpoints(identity)]
    observed = {(edge.port, edge.protocol) for edge in inputs.edges}
    result = {}
    for version, src in endpoints:
        for dst_version, dst in endpoints:
            if version != dst_version or src is dst:
                continue
            declared = {(c.port, c.protocol) for c in dst.pod.container_ports} if dst.pod is not None else set()
            for port, protocol in observed | declared:
                key = (f"{src.describe()} {src.ip}", f"{dst.describe()} {dst.ip}", port, protocol)
                result[key] = evaluator.judge(src, dst, port, protocol).allowed
    return result


def assert_same_verdicts(inputs: LearnedInputs, options: Options) -> tuple[Any, Any]:
    before = synthesize(inputs, dataclasses.replace(options, fold=False, fold_namespaces=False))
    after = synthesize(inputs, options)
    assert before.ok and after.ok, [d.describe() for d in after.report.verification.denied]
    assert before.report.verification.judged == after.report.verification.judged
    judged = verdicts(before.policies, inputs)
    assert judged == verdicts(after.policies, inputs)
    return before, after


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> LearnedInputs:
    """The bundled example as ``make demo`` learns it (its capture and snapshot through ``import``)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('example') / 'learned.db'}"
    code, _, err = run_cli("import", "--db", url, "--cluster", str(EXAMPLE / "cluster.yaml"),
                           "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err
    store = open_store(url, create=False)
    try:
        return load_learned(store)
    finally:
        store.close()


def by_name(policies: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(p for p in policies if p["metadata"]["name"] == name)


@pytest.mark.parametrize("options", [Options(), Options(ingress_only=True), Options(fold_namespaces=True),
                                     Options(port_range_min=2, cidr_aggregate=24)], ids=repr)
def test_folding_keeps_every_verdict_on_the_bundled_example(example: LearnedInputs, options: Options) -> None:
    before, after = assert_same_verdicts(example, options)
    assert after.report.peers < before.report.peers


def test_prometheus_scrape_targets_in_booking_are_one_peer(example: LearnedInputs) -> None:
    [rule] = by_name(synthesize(example).policies, "prometheus-netpol-gen")["spec"]["egress"]
    booking = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "booking"}},
               "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": [
                   "auth", "booking", "catalogue", "payments", "postgres", "web"]}]}}
    assert rule["to"][0] == booking and len(rule["to"]) == 3  # and ingress-nginx, kube-dns: other namespaces
    assert "values: [auth, booking, catalogue, payments, postgres, web]" in render_yaml(synthesize(example).policies)


def test_sizes_before_and_after_on_the_bundled_example(example: LearnedInputs) -> None:
    """The size table's first rows: the unfolded set is the output before #14 (46 peers), the fold
    writes the six booking scrape targets of prometheus as one peer, and three rules' peers likewise."""
    before, after = synthesize(example, UNFOLDED).report, synthesize(example).report
    assert (before.policies, before.rules, before.peers) == (10, 32, 46)
    assert (after.policies, after.rules, after.peers) == (10, 32, 35)
    assert after.yaml_lines < before.yaml_lines


def _reviews(example: LearnedInputs) -> LearnedInputs:
    """The example with one more booking workload, called by web and scraped by prometheus."""
    template = next(w for w in example.workloads if w.name == "catalogue").pods[0]
    pod = dataclasses.replace(template, name="reviews-0", ips=("10.244.9.9",),
                              labels={"app.kubernetes.io/name": "reviews", "tier": "backend"})
    reviews = LearnedWorkload("booking", "Deployment", "reviews", (pod,))
    end = Identity(IdentityKind.POD, "booking", "Deployment", "reviews")
    web = Identity(IdentityKind.POD, "booking", "Deployment", "web")
    prometheus = Identity(IdentityKind.POD, "monitoring", "StatefulSet", "prometheus")
    seen = next(e for e in example.edges if e.src == web and e.dst.workload_name == "catalogue")  # within the window
    edges = (LearnedEdge(web, end, 8080, "TCP", 3, seen.first_seen, seen.last_seen),
             LearnedEdge(prometheus, end, 9100, "TCP", 2, seen.first_seen, seen.last_seen))
    return dataclasses.replace(example, workloads=(*example.workloads, reviews), edges=(*example.edges, *edges))


def _without_value(value: str, obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_value(value, v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_value(value, v) for v in obj if v != value]
    return obj


def test_a_new_workload_adds_a_value_it_does_not_reshape_the_policies(example: LearnedInputs) -> None:
    old = {p["metadata"]["name"]: p for p in synthesize(example).policies}
    grown = _reviews(example)
    new = {p["metadata"]["name"]: p for p in synthesize(grown).policies}
    assert set(new) - set(old) == {"reviews-netpol-gen"}
    changed = sorted(name for name in old if new[name] != old[name])
    assert changed == ["prometheus-netpol-gen", "web-netpol-gen"]
    for name in changed:  # the only change: "reviews" joined the values of an existing fold
        assert _without_value("reviews", new[name]) == old[name]
        assert render_yaml([new[name]]).count("\n") == render_yaml([old[name]]).count("\n")
    assert_same_verdicts(grown, Options())


def test_explain_names_the_edges_behind_each_folded_value(example: LearnedInputs) -> None:
    synthesis = synthesize(example)
    text = render_yaml([by_name(synthesis.policies, "prometheus-netpol-gen")], synthesis.evidence)
    for target in ("auth", "booking", "catalogue", "payments", "postgres", "web"):
        assert f"#   [app.kubernetes.io/name={target}] monitoring/StatefulSet/prometheus -> booking/" in text
    assert "#   monitoring/StatefulSet/prometheus -> kube-system/Deployment/coredns" in text  # not folded


def test_folding_keeps_every_verdict_on_a_gen_cluster_scenario(tmp_path: Path) -> None:
    """The benchmark generator's cluster and flows, imported with the real CLI."""
    gen_cluster.generate(tmp_path, namespaces=4, pods=60, nodes=2, flows=3000)
    url = f"sqlite:///{tmp_path / 'learned.db'}"
    code, _, err = run_cli("import", "--db", url, "--cluster", str(tmp_path / "cluster.yaml"),
                           "--flows", str(tmp_path / "flows.jsonl"))
    assert code == 0, err
    store = open_store(url, create=False)
    inputs = load_learned(store)
    store.close()
    for options in (Options(), Options(fold_namespaces=True, ingress_only=True)):
        before, after = assert_same_verdicts(inputs, options)
        assert after.report.peers < before.report.peers


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(learned_graphs(), any_options, st.booleans())
def test_folding_keeps_every_verdict_on_generated_graphs(inputs: LearnedInputs, options: Options,
                                                         namespaces: bool) -> None:
    assert_same_verdicts(inputs, dataclasses.replace(options, fold_namespaces=namespaces))


# --- hand-made cases ----------------------------------------------------------------------------------------


def workload(namespace: str, name: str, labels: dict[str, str], *ips: str, ports: tuple[ContainerPort, ...] = ()
             ) -> LearnedWorkload:
    """One pod per address."""
    return LearnedWorkload(namespace, "Deployment", name, tuple(PodView(f"{name}-{i}", labels, ports, (ip,), "n1")
                                                                for i, ip in enumerate(ips)))


def pod_end(w: LearnedWorkload) -> Identity:
    return Identity(IdentityKind.POD, w.namespace, w.kind, w.name)


def test_peers_fold_only_with_peers_of_the_same_other_labels() -> None:
    server = workload("svc", "api", {"app": "api"}, "10.244.0.1", ports=(ContainerPort(8080),))
    clients = [workload("svc", "redis", {"app": "redis", "role": "primary"}, "10.244.0.2"),
               workload("svc", "cache", {"app": "cache", "role": "primary"}, "10.244.0.3"),
               workload("svc", "replica", {"app": "redis", "role": "replica"}, "10.244.0.4")]
    idle = workload("svc", "cache-replica", {"app": "cache", "role": "replica"}, "10.244.0.5")  # needs role too
    inputs = LearnedInputs((server, *clients, idle), tuple(LearnedEdge(pod_end(c), pod_end(server), 8080, "TCP")
                                                     for c in clients))
    [rule] = by_name(synthesize(inputs).policies, "api-netpol-gen")["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["cache", "redis"]}],
                         "matchLabels": {"role": "primary"}}},
        {"podSelector": {"matchLabels": {"app": "redis", "role": "replica"}}},
    ]
    assert_same_verdicts(inputs, Options())


def _batch(*extra: LearnedWorkload) -> LearnedInputs:
    """Two batch jobs call the api in another namespace; two etcd members talk to each other."""
    api = workload("svc", "api", {"app": "api"}, "10.244.0.1", ports=(ContainerPort(8080),))
    jobs = [workload("batch", "job-a", {"app": "job-a"}, "10.244.1.1"),
            workload("batch", "job-b", {"app": "job-b"}, "10.244.1.2")]
    members = [workload("db", f"etcd-{x}", {"app": f"etcd-{x}"}, f"10.244.2.{i}", f"10.244.3.{i}",
                        ports=(ContainerPort(2380),)) for i, x in enumerate("ab", 1)]
    edges = [LearnedEdge(pod_end(j), pod_end(api), 8080, "TCP") for j in jobs]
    edges += [LearnedEdge(pod_end(a), pod_end(b), 2380, "TCP") for a in members for b in members]
    return LearnedInputs((api, *jobs, *members, *extra), tuple(edges))


def test_a_namespace_covered_whole_is_the_namespace_only_with_the_flag_and_the_report_says_so() -> None:
    inputs = _batch()
    default = synthesize(inputs)
    [rule] = by_name(default.policies, "api-netpol-gen")["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["job-a", "job-b"]
    assert not any("--fold-namespaces" in w for w in default.report.warnings)
    _, wide = assert_same_verdicts(inputs, Options(fold_namespaces=True))
    [rule] = by_name(wide.policies, "api-netpol-gen")["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}}}]
    [etcd] = by_name(wide.policies, "etcd-a-netpol-gen")["spec"]["ingress"]
    assert etcd["from"] == [{"podSelector": {}}]  # its own namespace, whole
    assert ("svc/Deployment/api: its ingress allows every pod of namespace batch, workloads created there later "
            "included (--fold-namespaces)") in wide.report.warnings
    assert "db/Deployment/etcd-a: its ingress allows every pod of namespace db" in "\n".join(wide.report.warnings)
    # why it is opt-in: a job started later is let in by the namespace fold, not by the exact one
    later = Pod("batch", "job-c-0", "batch/job-c-0", {"app": "job-c"}, ("10.244.1.3",), Workload("Deployment", "job-c"))
    for policies, allowed in ((default.policies, False), (wide.policies, True)):
        learned = LearnedCluster(inputs)
        api = learned.pods[("svc", "Deployment", "api")][0]
        evaluator = Evaluator(learned.cluster, [parse_policy(p) for p in policies])
        verdict = evaluator.judge(Endpoint("10.244.1.3", EndpointKind.POD, pod=later),
                                  Endpoint(api.ips[0], EndpointKind.POD, pod=api), 8080, "TCP")
        assert verdict.allowed is allowed


def test_no_namespace_fold_when_a_workload_of_the_namespace_is_no_peer() -> None:
    idle = workload("batch", "job-c", {"app": "job-c"}, "10.244.1.3")
    wide = synthesize(_batch(idle), Options(fold_namespaces=True))
    [rule] = by_name(wide.policies, "api-netpol-gen")["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["job-a", "job-b"]
    assert not any("namespace batch" in w for w in wide.report.warnings)


def test_the_proof_rejects_a_fold_that_selects_other_learned_pods() -> None:
    """The evaluator's check that gates every fold, on a candidate wider than its members."""
    population = PodPopulation(_batch())
    refs = [PeerRef(IdentityKind.POD, labels=(("app", v),), namespace="batch") for v in ("job-a", "job-b")]
    exact = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}},
             "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["job-a", "job-b"]}]}}
    assert population.proves(exact, refs, "svc")
    assert population.proves({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}}},
                              refs, "svc")  # every learned pod of batch: exact today
    assert not population.proves({"namespaceSelector": {}}, refs, "svc")  # api and etcd pods too
    assert not population.proves({"podSelector": {"matchLabels": {"app": "job-a"}},
                                  "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}}},
                                 refs, "svc")  # narrower


def external(ip: str) -> Identity:
    return Identity.of_address(IdentityKind.EXTERNAL, ip)


def test_rules_with_the_same_peers_merge_their_ports_and_ranges_need_port_range_min() -> None:
    """Two address folds of one /24 with other ports were two rules with the same ipBlock."""
    client = workload("ns", "client", {"app": "client"}, "10.244.0.2")
    edges = [LearnedEdge(pod_end(client), external(f"192.0.2.{host}"), port, "TCP")
             for host, ports in ((1, (8000, 8001)), (2, (8000, 8001)), (7, (8002, 8003)), (9, (8002, 8003)))
             for port in ports]
    inputs = LearnedInputs((client,), tuple(edges))
    unfolded = synthesize(inputs, Options(cidr_aggregate=24, fold=False)).policies[0]["spec"]["egress"]
    assert [r["to"] for r in unfolded] == [[{"ipBlock": {"cidr": "192.0.2.0/24"}}]] * 2
    [merged] = synthesize(inputs, Options(cidr_aggregate=24)).policies[0]["spec"]["egress"]
    assert merged["ports"] == [{"port": p, "protocol": "TCP"} for p in (8000, 8001, 8002, 8003)]
    [ranged] = synthesize(inputs, Options(cidr_aggregate=24, port_range_min=3)).policies[0]["spec"]["egress"]
    assert ranged["ports"] == [{"port": 8000, "endPort": 8003, "protocol": "TCP"}]
    assert_same_verdicts(inputs, Options(cidr_aggregate=24, port_range_min=3))


@pytest.mark.skipif(not reference_apps.REFERENCE.is_dir(),
                    reason=f"no reference policies at {reference_apps.REFERENCE}")
@pytest.mark.parametrize("name", reference_apps.APPS)
def test_ingress_only_export_has_no_more_peers_than_the_hand_written_policies(name: str) -> None:
    """The traffic the hand-written policies of a public app let in through pod peers, learnt: our
    ingress-only export of it needs no more peers than they have."""
    app = reference_apps.build(name)
    assert app.inputs.edges
    _, after = assert_same_verdicts(app.inputs, Options(ingress_only=True))
    assert after.report.peers <= app.reference_peers
