"""``export --target kubernetes|cilium|calico`` on the bundled ticket-booking example and on a generated
scenario: every exported object validates against the upstream CRD schema of its kind (shipped in
tests/data/crds, see its README), and ``check`` on the exported set admits the recorded flows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bench import gen_cluster
from netpol_gen.errors import PolicyError
from netpol_gen.model.documents import load_documents
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ticket-booking"
CRDS = Path(__file__).parent / "data" / "crds"
TARGETS = ("kubernetes", "cilium", "calico")


def _crd_schema(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":  # already the openAPIV3Schema (CRDs catalog extraction)
        return json.loads(path.read_text())
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


SCHEMAS = {
    ("cilium.io/v2", "CiliumNetworkPolicy"): _crd_schema(CRDS / "cilium" / "ciliumnetworkpolicy_v2.json"),
    ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"):
        _crd_schema(CRDS / "cilium" / "ciliumclusterwidenetworkpolicy_v2.json"),
    ("projectcalico.org/v3", "NetworkPolicy"): _crd_schema(CRDS / "calico" / "projectcalico.org_networkpolicies.yaml"),
    ("projectcalico.org/v3", "GlobalNetworkPolicy"):
        _crd_schema(CRDS / "calico" / "projectcalico.org_globalnetworkpolicies.yaml"),
    ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"):
        _crd_schema(CRDS / "network-policy-api" / "policy.networking.k8s.io_clusternetworkpolicies.yaml"),
    ("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"):
        _crd_schema(CRDS / "network-policy-api" / "policy.networking.k8s.io_adminnetworkpolicies.yaml"),
    ("policy.networking.k8s.io/v1alpha1", "BaselineAdminNetworkPolicy"):
        _crd_schema(CRDS / "network-policy-api" / "policy.networking.k8s.io_baselineadminnetworkpolicies.yaml"),
}


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What the upstream schema of ``obj``'s kind finds wrong with it (NetworkPolicy: the
    Kubernetes OpenAPI schema, through kubernetes-validate)."""
    key = (obj["apiVersion"], obj["kind"])
    if key == ("networking.k8s.io/v1", "NetworkPolicy"):
        import kubernetes_validate
        try:
            kubernetes_validate.validate(obj, "1.30", strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [str(exc)]
        return []
    validator = jsonschema.Draft7Validator(SCHEMAS[key])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def exported(out: Path) -> list[dict[str, Any]]:
    return [doc.obj for doc in load_documents([str(out)], PolicyError)]


@pytest.fixture(scope="module")
def example_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The store `make demo` learns: the example's capture (with its DNS answers) and snapshot."""
    url = f"sqlite:///{tmp_path_factory.mktemp('example') / 'netpol-gen.db'}"
    result = run_cli("import", "--db", url, "--cluster", str(EXAMPLE / "cluster.yaml"),
                     "--pcap", str(EXAMPLE / "capture.pcap"))
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A generated cluster (3 nodes, DaemonSets, kubelet probes, external peers without names) and
    its flows, learnt into a store: stands in for a cluster the example does not resemble."""
    data = tmp_path_factory.mktemp("generated")
    gen_cluster.generate(data, namespaces=6, pods=80, nodes=3, flows=3000)
    url = f"sqlite:///{data / 'netpol-gen.db'}"
    result = run_cli("import", "--db", url, "--cluster", str(data / "cluster.yaml"),
                     "--flows", str(data / "flows.jsonl"))
    assert result.exit_code == 0, result.output
    yield data, url


def export(url: str, target: str, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = run_cli("export", "--db", url, "--target", target, "--output-dir", str(out), *extra)
    assert result.exit_code == 0, result.output
    return exported(out)


def check(cluster: Path, policies: Path, flows: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("check", "--cluster", str(cluster), "--policies", str(policies), "--flows", str(flows),
                     "--format", "json", *extra)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("target", TARGETS)
def test_example_export_validates_against_the_crd_schema(example_db: str, target: str, tmp_path: Path) -> None:
    objects = export(example_db, target, tmp_path)
    assert objects
    expected_kind = {"kubernetes": "networking.k8s.io/v1", "cilium": "cilium.io/v2", "calico": "projectcalico.org/v3"}
    assert {o["apiVersion"] for o in objects} == {expected_kind[target]}
    assert {o["metadata"]["name"]: schema_errors(o) for o in objects if schema_errors(o)} == {}


@pytest.mark.parametrize("target", TARGETS)
def test_generated_export_validates_against_the_crd_schema(generated: tuple[Path, str], target: str,
                                                           tmp_path: Path) -> None:
    objects = export(generated[1], target, tmp_path, "--default-deny")
    assert {o["metadata"]["name"]: schema_errors(o) for o in objects if schema_errors(o)} == {}
    if target == "cilium":  # the scenario has what the example lacks: nodes and unnamed external peers
        rules = [r for o in objects for d in ("ingress", "egress") for r in o["spec"].get(d, [])]
        assert any("fromEntities" in r for r in rules) and any("toCIDRSet" in r or "fromCIDRSet" in r for r in rules)
        assert {"endpointSelector": {}, "ingress": [{}], "egress": [{}]} in [o["spec"] for o in objects]


def test_the_schemas_catch_a_broken_object() -> None:
    """The validation has teeth: a field the CRD does not know, and a port of the wrong shape."""
    cilium = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x"},
              "spec": {"endpointSelector": {}, "egress": [{"toFQDN": [{"matchName": "a.example"}]}]}}
    calico = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "x"},
              "spec": {"selector": "all()", "ingress": [{"action": "Allow", "protocol": "TCP",
                                                         "destination": {"ports": [{"port": 80}]}}]}}
    assert schema_errors(cilium) and schema_errors(calico)


@pytest.mark.parametrize("target", TARGETS)
def test_check_with_the_exported_set_allows_every_recorded_flow_of_the_example(
        example_db: str, target: str, tmp_path: Path) -> None:
    export(example_db, target, tmp_path)
    report = check(EXAMPLE / "cluster.yaml", tmp_path, EXAMPLE / "flows.jsonl", "--db", example_db)
    summary = report["summary"]
    assert summary["flows"] > 0 and summary["allowed"] == summary["flows"], report["denied"]


def test_cilium_fqdn_rules_need_the_recorded_dns_answers(example_db: str, tmp_path: Path) -> None:
    """Without the store's DNS answers the external addresses have no names, so the toFQDNs rules
    admit nothing: the check really judges names, not addresses."""
    export(example_db, "cilium", tmp_path)
    report = check(EXAMPLE / "cluster.yaml", tmp_path, EXAMPLE / "flows.jsonl")
    denied = {entry["dst"] for entry in report["denied"]}
    assert denied == {"142.250.74.42", "157.240.221.16", "203.0.113.40"}


def test_cilium_names_external_peers_and_lets_the_dns_proxy_see_lookups(example_db: str, tmp_path: Path) -> None:
    objects = {o["metadata"]["name"]: o for o in export(example_db, "cilium", tmp_path)}
    egress = objects["auth-netpol-gen"]["spec"]["egress"]
    fqdns = [r["toFQDNs"] for r in egress if "toFQDNs" in r]
    assert fqdns == [[{"matchName": "graph.facebook.com"}, {"matchName": "oauth2.googleapis.com"}]]
    dns = [r for r in egress if any(p.get("rules") for p in r.get("toPorts", []))]
    assert len(dns) == 1
    assert dns[0]["toEndpoints"] == [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                                      "k8s:k8s-app": "kube-dns"}}]
    assert dns[0]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}
    assert not any("toCIDRSet" in r for r in egress)


def test_fqdn_patterns_fold_names_under_one_parent_only_when_asked() -> None:
    from netpol_gen.synthesizer.render_cilium import fqdn_selectors
    names = ["a.api.example.com", "b.api.example.com", "example.org"]
    assert fqdn_selectors(names, patterns=False) == [{"matchName": n} for n in names]
    assert fqdn_selectors(names, patterns=True) == [{"matchPattern": "*.api.example.com"},
                                                    {"matchName": "example.org"}]


@pytest.mark.parametrize("target", ("cilium", "calico"))
def test_generated_targets_admit_every_flow_the_networkpolicies_admit(
        generated: tuple[Path, str], target: str, tmp_path: Path) -> None:
    """Same synthesis, other engine: a flow the NetworkPolicy export admits is admitted by the target's
    export too (Cilium may admit more: its node entities stand for every node, a /32 cannot)."""
    data, url = generated
    export(url, "kubernetes", tmp_path / "k8s")
    export(url, target, tmp_path / target)
    args = ("--db", url, "--format", "jsonl")
    verdicts = {}
    for name in ("k8s", target):
        result = run_cli("check", "--cluster", str(data / "cluster.yaml"), "--policies", str(tmp_path / name),
                         "--flows", str(data / "flows.jsonl"), *args)
        verdicts[name] = [json.loads(line)["allowed"] for line in result.stdout.splitlines()]
    assert len(verdicts["k8s"]) == 3000 and sum(verdicts["k8s"]) > 2800
    assert all(theirs for ours, theirs in zip(verdicts["k8s"], verdicts[target], strict=True) if ours)
    if target == "calico":  # nets are /32s as ipBlocks are: exactly the same verdicts
        assert verdicts[target] == verdicts["k8s"]


def test_explain_is_refused_for_other_targets(example_db: str) -> None:
    result = run_cli("export", "--db", example_db, "--target", "calico", "--explain")
    assert result.exit_code == 2 and "--target kubernetes" in result.output


@pytest.mark.parametrize("target", ("cilium", "calico"))
def test_diff_judges_an_exported_set_against_the_policies_in_force(example_db: str, target: str,
                                                                  tmp_path: Path) -> None:
    """``diff --db`` on a Cilium or Calico set: the store's names admit the toFQDNs flows, so no
    recorded flow is cut (exit 1: changes only); the per-policy part lists the new kinds as added."""
    export(example_db, target, tmp_path)
    result = run_cli("diff", "--db", example_db, "--proposed", str(tmp_path),
                     "--against", str(EXAMPLE / "policies"), "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["impact"]["flows"] == 94 and report["impact"]["flows_broken"] == 0
    added = [c["policy"] for c in report["policies"] if c["change"] == "added"]
    assert added and all(name.startswith(f"{target}:") for name in added)


CNI_SCENARIOS = sorted((Path(__file__).parent / "conformance_cni").glob("*.yaml"))


@pytest.mark.parametrize("path", CNI_SCENARIOS, ids=lambda path: path.stem)
def test_conformance_tables_hold_only_valid_objects(path: Path) -> None:
    """The evaluator is tested on objects the API servers would take: each table's policies against
    their CRD schemas."""
    policies = yaml.safe_load(path.read_text())["policies"]
    assert {p["metadata"]["name"]: schema_errors(p) for p in policies if schema_errors(p)} == {}
