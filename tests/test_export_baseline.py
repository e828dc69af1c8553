"""``export --baseline``: the egress every namespace does alike as one Baseline-tier
ClusterNetworkPolicy. Stands in for a cluster of several small apps (a web and a database per
namespace, each resolving names through CoreDNS): the snapshot and flows are written here, imported
into a real store, exported, and judged by ``check`` (the evaluator) as the user would."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli import run_cli
from tests.test_export_targets import EXAMPLE, exported, schema_errors

APPS = ("blog", "shop", "wiki")
T0 = 1_764_000_000
DNS = "10.244.0.10"


def _pod(namespace: str, name: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": f"{namespace}-{name}",
                         "creationTimestamp": "2025-11-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def _scenario(path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Per app namespace a web (egress: DNS, its database, an external API) and a database (egress:
    DNS only); the snapshot, the recorded flows, and the pods' (namespace, name, ip)."""
    namespaces = ["kube-system", *APPS]
    items: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}
                                   for ns in namespaces]
    items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1",
                                                                   "labels": {"kubernetes.io/hostname": "node-1"}},
                  "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}})
    items.append(_pod("kube-system", "coredns", DNS, {"k8s-app": "kube-dns"},
                      [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                       {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]))
    pods = []
    flows = []
    for i, app in enumerate(APPS):
        web, db = f"10.244.{i + 1}.2", f"10.244.{i + 1}.3"
        items.append(_pod(app, "web", web, {"app": "web"}, [{"name": "http", "containerPort": 8080}]))
        items.append(_pod(app, "db", db, {"app": "db"}, [{"name": "pg", "containerPort": 5432}]))
        pods += [{"namespace": app, "name": "web", "ip": web}, {"namespace": app, "name": "db", "ip": db}]
        seen = [(web, DNS, 53, "UDP"), (db, DNS, 53, "UDP"), (web, db, 5432, "TCP"), (web, "203.0.113.9", 443, "TCP")]
        for n, (src, dst, port, proto) in enumerate(seen):
            flows.append({"src_ip": src, "dst_ip": dst, "dst_port": port, "protocol": proto, "ts": T0 + 10 * i + n})
    cluster, flow_file = path / "cluster.yaml", path / "flows.jsonl"
    cluster.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    flow_file.write_text("".join(json.dumps(f) + "\n" for f in flows))
    return cluster, flow_file, pods


Store = tuple[Path, Path, list[dict[str, Any]], str]  # snapshot, flows, pods, store URL


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    data = tmp_path_factory.mktemp("baseline")
    cluster, flows, pods = _scenario(data)
    url = f"sqlite:///{data / 'netpol-gen.db'}"
    result = run_cli("import", "--db", url, "--cluster", str(cluster), "--flows", str(flows))
    assert result.exit_code == 0, result.output
    return cluster, flows, pods, url


def _export(url: str, out: Path, *extra: str) -> dict[tuple[str, str], dict[str, Any]]:
    result = run_cli("export", "--db", url, "--output-dir", str(out), *extra)
    assert result.exit_code == 0, result.output
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in exported(out)}


def _verdicts(cluster: Path, policies: Path, flows: Path) -> list[bool]:
    result = run_cli("check", "--cluster", str(cluster), "--policies", str(policies), "--flows", str(flows),
                     "--format", "jsonl")
    assert result.exit_code in (0, 1), result.output
    return [json.loads(line)["allowed"] for line in result.stdout.splitlines()]


def test_the_common_egress_becomes_one_baseline_policy_and_policies_get_shorter(store: Store, tmp_path: Path) -> None:
    """DNS to CoreDNS (UDP, and TCP for truncated answers) and nothing else is the egress of the
    databases of all three namespaces: it is one Baseline-tier ClusterNetworkPolicy, valid for the
    upstream CRD; the databases lose their egress section; the webs, which do more, keep theirs (a
    NetworkPolicy isolating egress decides before the Baseline tier)."""
    _, _, _, url = store
    plain = _export(url, tmp_path / "plain")
    policies = _export(url, tmp_path / "baseline", "--baseline")
    baseline = policies.pop(("", "netpol-gen-baseline"))
    assert schema_errors(baseline) == [] and baseline["kind"] == "ClusterNetworkPolicy"
    assert baseline["spec"]["tier"] == "Baseline"
    assert baseline["spec"]["subject"]["namespaces"]["matchExpressions"][0]["values"] == list(APPS)
    accept, deny = baseline["spec"]["egress"]
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert accept["to"] == [{"pods": {"namespaceSelector": kube_system,
                                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}]
    assert accept["protocols"] == [{"tcp": {"destinationPort": {"number": 53}}},
                                   {"udp": {"destinationPort": {"number": 53}}}]
    assert deny["action"] == "Deny"
    for app in APPS:
        assert policies[(app, "db-netpol-gen")]["spec"]["policyTypes"] == ["Ingress"]
        assert "egress" not in policies[(app, "db-netpol-gen")]["spec"]
        assert policies[(app, "web-netpol-gen")] == plain[(app, "web-netpol-gen")]
    assert {o["metadata"]["name"]: schema_errors(o) for o in policies.values() if schema_errors(o)} == {}
    namespaced = sum((tmp_path / "baseline" / f"{app}.yaml").read_text().count("\n") for app in APPS)
    assert namespaced < sum((tmp_path / "plain" / f"{app}.yaml").read_text().count("\n") for app in APPS)


def test_the_combined_set_allows_exactly_what_the_networkpolicies_alone_allow(store: Store, tmp_path: Path) -> None:
    """``check`` with the combined set (NetworkPolicies + the Baseline policy) admits every recorded
    flow, and on every pod pair x (DNS, the database port, HTTP, an external address) gives the
    verdicts of the set without --baseline: shorter, never wider."""
    cluster, flows, pods, url = store
    _export(url, tmp_path / "plain")
    _export(url, tmp_path / "baseline", "--baseline")
    assert all(_verdicts(cluster, tmp_path / "baseline", flows))
    targets = [p["ip"] for p in pods] + [DNS, "203.0.113.9", "198.51.100.1"]
    probes = [{"src_ip": src["ip"], "dst_ip": dst, "dst_port": port, "protocol": proto, "ts": T0 + 100}
              for src, dst, (port, proto) in itertools.product(
                  pods, targets, [(53, "UDP"), (53, "TCP"), (5432, "TCP"), (8080, "TCP"), (443, "TCP")])
              if src["ip"] != dst]
    probe_file = tmp_path / "probes.jsonl"
    probe_file.write_text("".join(json.dumps(p) + "\n" for p in probes))
    with_baseline = _verdicts(cluster, tmp_path / "baseline", probe_file)
    assert with_baseline == _verdicts(cluster, tmp_path / "plain", probe_file)
    assert 0 < sum(with_baseline) < len(probes)  # the probes cover both verdicts


def test_with_default_deny_the_namespaces_deny_ingress_and_the_baseline_egress(store: Store, tmp_path: Path) -> None:
    """A default-deny NetworkPolicy isolating egress would decide before the Baseline tier and cut
    the databases' DNS: with --baseline it closes ingress only, and every recorded flow still passes."""
    cluster, flows, _, url = store
    policies = _export(url, tmp_path, "--baseline", "--default-deny")
    for app in APPS:
        assert policies[(app, "netpol-gen-default-deny")]["spec"]["policyTypes"] == ["Ingress"]
    assert all(_verdicts(cluster, tmp_path, flows))


def test_no_common_egress_writes_no_baseline_and_says_so(tmp_path: Path) -> None:
    """The example: only the booking namespace resolves names, and its workloads all do more than that."""
    url = f"sqlite:///{tmp_path / 'db'}"
    assert run_cli("import", "--db", url, "--cluster", str(EXAMPLE / "cluster.yaml"),
                   "--pcap", str(EXAMPLE / "capture.pcap")).exit_code == 0
    result = run_cli("export", "--db", url, "--baseline")
    assert result.exit_code == 0 and "ClusterNetworkPolicy" not in result.stdout
    assert "no workloads of two or more namespaces have exactly the same egress" in result.stderr


def test_baseline_is_refused_for_other_targets(store: Store) -> None:
    result = run_cli("export", "--db", store[3], "--baseline", "--target", "cilium")
    assert result.exit_code == 2 and "--target kubernetes" in result.output
