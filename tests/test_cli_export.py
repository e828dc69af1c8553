"""`netpol-gen export` end to end on the bundled ticket-booking example: a real capture (SYN/SYN-ACK
handshakes, UDP requests, DNS answers) and a kubectl-shaped snapshot are imported into a store on
SQLite and on PostgreSQL, then exported. The generated set must admit every recorded flow (judged by
the evaluator through `check`), carry the DNS names of the external peers, and be deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli import run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
CLUSTER = str(EXAMPLE / "cluster.yaml")


@pytest.fixture
def learned(store_url: str) -> str:
    code, _, err = run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err
    return store_url


def _policies(text: str) -> dict[str, dict]:
    return {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(text) if d}


def test_exported_policies_allow_every_recorded_flow(learned: str, tmp_path: Path) -> None:
    code, _, err = run_cli("export", "--db", learned, "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["booking.yaml", "ingress-nginx.yaml",
                                                                     "monitoring.yaml"]
    code, out, err = run_cli("check", "--cluster", CLUSTER, "--policies", str(tmp_path / "out"),
                          "--flows", str(EXAMPLE / "flows.jsonl"), "--format", "json")
    report = json.loads(out)
    assert code == 0, report["denied"]
    assert report["summary"]["denied"] == 0 and report["summary"]["flows"] > 90


def test_each_workload_gets_one_policy_for_both_directions(learned: str) -> None:
    code, out, err = run_cli("export", "--db", learned)
    assert code == 0, err
    policies = _policies(out)
    # kube-system is excluded by default; every other workload with traffic has one policy
    assert "booking/web-netpol-gen" in policies and "booking/nightly-report-netpol-gen" in policies
    assert not any(key.startswith("kube-system/") for key in policies)
    assert all(p["spec"]["policyTypes"] == ["Ingress", "Egress"] for p in policies.values())


def test_external_identity_providers_are_ip_blocks_named_by_the_dns_answers_seen(learned: str) -> None:
    code, out, _ = run_cli("export", "--db", learned, "--namespace", "booking")
    assert code == 0
    auth = _policies(out)["booking/auth-netpol-gen"]
    names = json.loads(auth["metadata"]["annotations"]["netpol-gen.io/egress-ipblocks"])
    assert names == {"157.240.221.16/32": "graph.facebook.com", "142.250.74.42/32": "oauth2.googleapis.com"}
    cidrs = {peer["ipBlock"]["cidr"] for rule in auth["spec"]["egress"] for peer in rule.get("to", [])
             if "ipBlock" in peer}
    assert cidrs == set(names)
    assert "cidr: 157.240.221.16/32  # graph.facebook.com" in out


def test_export_is_byte_identical_across_runs_and_formats_agree(learned: str) -> None:
    first, second = run_cli("export", "--db", learned), run_cli("export", "--db", learned)
    assert first.exit_code == 0 and first.stdout == second.stdout
    code, out, _ = run_cli("export", "--db", learned, "--format", "json")
    assert code == 0
    as_json = {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d for d in json.loads(out)["items"]}
    assert as_json == _policies(first.stdout)


def test_ingress_only_leaves_egress_open(learned: str) -> None:
    code, out, _ = run_cli("export", "--db", learned, "--ingress-only")
    assert code == 0
    assert all(p["spec"]["policyTypes"] == ["Ingress"] and "egress" not in p["spec"] for p in _policies(out).values())


def test_per_policy_layout_writes_one_file_per_policy(learned: str, tmp_path: Path) -> None:
    code, out, _ = run_cli("export", "--db", learned)
    code, _, err = run_cli("export", "--db", learned, "--output-dir", str(tmp_path), "--layout", "policy")
    assert code == 0, err
    assert {p.stem for p in tmp_path.glob("*.yaml")} == {k.replace("/", ".") for k in _policies(out)}
    assert not list(tmp_path.glob(".*.tmp")), "no staging files left behind"


def test_the_report_opens_with_a_plain_summary_that_agrees_with_the_detail(learned: str) -> None:
    """Issue #12: a reviewer reads what export writes in the first line; its numbers are the report's."""
    code, out, err = run_cli("export", "--db", learned)
    assert code == 0
    first, detail = err.splitlines()[0], next(line for line in err.splitlines() if line.startswith("policies: "))
    policies = len(_policies(out))
    assert first.startswith(f"{policies} policies for 11 workloads learnt (")
    assert "every observed connection is allowed" in first
    rules, lines = detail.split("rules: ")[1].split(",")[0], detail.split("YAML lines: ")[1].split(";")[0]
    assert f"({rules} rules, {lines} YAML lines)" in first


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = run_cli("export", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2
    assert err.startswith("netpol-gen: error:") and err.count("\n") == 1


def test_bad_window_time_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = run_cli("export", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--since", "yesterday")
    assert code == 2 and "--since 'yesterday' is not an ISO 8601 time" in err


def test_ingress_only_and_egress_only_exclude_each_other() -> None:
    code, _, err = run_cli("export", "--ingress-only", "--egress-only")
    assert code == 2 and "exclude each other" in err


def test_explain_comments_each_rule_with_the_edges_behind_it(learned: str) -> None:
    code, plain, _ = run_cli("export", "--db", learned, "--namespace", "booking")
    code, explained, err = run_cli("export", "--db", learned, "--namespace", "booking", "--explain")
    assert code == 0, err
    assert list(yaml.safe_load_all(explained)) == list(yaml.safe_load_all(plain))  # comments only
    assert run_cli("export", "--db", learned, "--namespace", "booking", "--explain").stdout == explained
    auth = next(d for d in explained.split("---\n") if "name: auth-netpol-gen" in d)
    lines = auth.splitlines()
    comment = next(i for i, line in enumerate(lines) if "-> external/157.240.221.16 443/TCP" in line)
    expected = "  #   booking/Deployment/auth -> external/157.240.221.16 443/TCP: 3 connections, "
    assert lines[comment].startswith(expected)
    heading = next(line for line in reversed(lines[:comment]) if not line.startswith("  #   "))
    assert heading.startswith("  # egress[") and heading.endswith("allows 2 observed edges:")  # Google's too
    assert lines[comment + 1] == "  - ports:"
    # every rule of every policy has its comment block right above it
    for document in explained.split("---\n"):
        spec = yaml.safe_load(document)["spec"]
        rules = len(spec.get("ingress", [])) + len(spec.get("egress", []))
        assert document.count("observed edge") == rules


def test_explain_needs_yaml(learned: str) -> None:
    code, _, err = run_cli("export", "--db", learned, "--format", "json", "--explain")
    assert code == 2 and "--explain writes YAML comments" in err


def test_kubelet_probes_from_each_pods_node_are_left_to_the_own_node_rule(learned: str) -> None:
    """The capture has kubelet probes, each node probing only the pods it runs: no node ipBlock is
    written (the export test above shows `check` still allows every probe), and the report counts
    them in one line (a cluster has one per pod), listing them with --verbose."""
    code, out, err = run_cli("export", "--db", learned)
    assert code == 0
    assert "node " not in out and "cidr: 10.0." not in out
    counted = [line for line in err.splitlines() if line.startswith("allowed by the own-node rule")]
    assert len(counted) == 1 and "node-to-pod edges only seen between pods and their node (--verbose" in counted[0]
    code, verbose_out, err = run_cli("export", "--db", learned, "--verbose")
    assert code == 0 and verbose_out == out
    listed = [line for line in err.splitlines() if line.startswith("allowed by the own-node rule")]
    assert "allowed by the own-node rule: not written: node/node-1 -> booking/Deployment/web 8080/TCP" in err
    assert f"not written: {len(listed)} node-to-pod edges" in counted[0]


FOLD_NAMESPACES = Path(__file__).parent / "data" / "fold-namespaces"


def test_fold_namespaces_writes_a_namespace_covered_whole_as_the_namespace_and_says_so(store_url: str) -> None:
    """Two jobs, every pod of namespace batch, call the api: one In peer, or with the flag the namespace."""
    code, _, err = run_cli("import", "--db", store_url, "--cluster", str(FOLD_NAMESPACES / "cluster.yaml"),
                           "--flows", str(FOLD_NAMESPACES / "flows.jsonl"))
    assert code == 0, err
    batch = {"kubernetes.io/metadata.name": "batch"}
    code, exact, err = run_cli("export", "--db", store_url, "--namespace", "svc")
    assert code == 0, err
    [peer] = _policies(exact)["svc/api-netpol-gen"]["spec"]["ingress"][0]["from"]
    jobs = {"key": "app", "operator": "In", "values": ["job-a", "job-b"]}
    assert peer == {"namespaceSelector": {"matchLabels": batch}, "podSelector": {"matchExpressions": [jobs]}}
    assert "--fold-namespaces" not in err
    code, wide, err = run_cli("export", "--db", store_url, "--namespace", "svc", "--fold-namespaces")
    assert code == 0, err
    [peer] = _policies(wide)["svc/api-netpol-gen"]["spec"]["ingress"][0]["from"]
    assert peer == {"namespaceSelector": {"matchLabels": batch}}
    assert ("warning: svc/Deployment/api: its ingress allows every pod of namespace batch, workloads created there "
            "later included (--fold-namespaces)") in err
