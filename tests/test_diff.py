"""``netpol-gen diff`` and its library (evaluator.policy_diff, evaluator.impact) on the ticket-booking
example: examples/ticket-booking/{cluster.yaml,flows.jsonl,policies/in-force.yaml}.

Expected values come from examples/make_ticket_booking.py and the policy files:
- drop-rule.yaml removes booking from data-tier's Redis rule: each of the 2 booking pods connects to the
  redis Service 3 times, so 6 flows of booking -> redis:6379 would be cut (exit 3).
- opens-more.yaml lets auth reach Redis (auth's 3 recorded flows, denied today) and adds
  postgres-from-namespace (every pod of booking -> postgres:5432 by the port's name): the nightly-report
  flow (1, denied today) becomes allowed, and web, payments, auth and redis may reach 5432 although never
  observed (catalogue and booking are allowed today, nightly-report was observed).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.evaluator.impact import Connection, compute_impact
from netpol_gen.evaluator.policy_diff import Change, diff_policy_sets, load_policy_documents, policy_documents
from netpol_gen.model import iter_flows, load_cluster
from netpol_gen.model.documents import Document
from tests.cli import CliOutcome, run_cli

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "ticket-booking"
CLUSTER = EXAMPLE / "cluster.yaml"
FLOWS = EXAMPLE / "flows.jsonl"
IN_FORCE = EXAMPLE / "policies" / "in-force.yaml"
DATA = Path(__file__).parent / "data" / "diff-ticket-booking"
DROP_RULE = DATA / "drop-rule.yaml"
OPENS_MORE = DATA / "opens-more.yaml"
RECORDED = len(FLOWS.read_text().splitlines())  # one flow per line

BOOKING, REDIS, POSTGRES = "booking/Deployment/booking", "booking/Deployment/redis", "booking/StatefulSet/postgres"
AUTH, REPORT = "booking/Deployment/auth", "booking/CronJob/nightly-report"
REDIS_DENIES = ("ingress: isolated by booking/default-deny-ingress, booking/data-tier, "
                "booking/metrics-from-monitoring and no rule allows it")
POSTGRES_OPENED_TO = ["booking/Deployment/auth", "booking/Deployment/payments", "booking/Deployment/redis",
                      "booking/Deployment/web"]
UNCHANGED_IN_FORCE = ["booking/backends-from-web", "booking/default-deny-ingress",
                      "booking/metrics-from-monitoring", "booking/payments-from-booking", "booking/web-from-ingress"]


def run_diff(*extra: str, proposed: Path = IN_FORCE, against: Path | None = IN_FORCE,
             flows: Path = FLOWS) -> CliOutcome:
    args = ["diff", "--proposed", str(proposed), "--cluster", str(CLUSTER), "--flows", str(flows), *extra]
    if against is not None:
        args += ["--against", str(against)]
    return run_cli(*args)


def json_diff(**kwargs: Any) -> tuple[int, dict[str, Any]]:
    result = run_diff("--format", "json", **kwargs)
    assert result.exit_code in (0, 1, 3), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, report


# --- library ---------------------------------------------------------------------------------------


def impact_of(proposed: Path) -> Any:
    with FLOWS.open("rb") as stream:
        return compute_impact(
            load_cluster([str(CLUSTER)]),
            [d.policy for d in load_policy_documents([str(IN_FORCE)])],
            [d.policy for d in load_policy_documents([str(proposed)])],
            iter_flows(stream, str(FLOWS)),
        )


def test_dropped_peer_lists_the_flows_it_would_cut_with_the_rule_that_allowed_them() -> None:
    impact = impact_of(DROP_RULE)
    assert impact.flows == RECORDED
    assert impact.flows_broken == 6 and impact.flows_opened == 0
    [group] = impact.breaking
    assert group.connection == Connection(BOOKING, REDIS, 6379, "TCP")
    assert group.flows == 6
    assert group.services == {"booking/redis"}
    assert group.now == {"ingress: allowed by booking/data-tier#1"}
    assert group.proposed == {REDIS_DENIES}
    assert group.responsible == {"booking/default-deny-ingress", "booking/data-tier",
                                 "booking/metrics-from-monitoring"}
    assert impact.opening == [] and impact.opened == []


def test_opened_set_lists_newly_allowed_flows_and_never_observed_workload_ports() -> None:
    impact = impact_of(OPENS_MORE)
    assert impact.flows_broken == 0 and impact.flows_opened == 4
    assert [(g.connection, g.flows, g.services, g.proposed) for g in impact.opening] == [
        (Connection(REPORT, POSTGRES, 5432, "TCP"), 1, {"booking/postgres"},
         {"ingress: allowed by booking/postgres-from-namespace#0"}),
        (Connection(AUTH, REDIS, 6379, "TCP"), 3, {"booking/redis"}, {"ingress: allowed by booking/data-tier#2"}),
    ]
    assert [o.connection for o in impact.opened] == [
        Connection(src, POSTGRES, 5432, "TCP") for src in POSTGRES_OPENED_TO
    ]
    assert all(o.port_name == "postgres" for o in impact.opened)
    assert all(o.proposed.endswith("ingress: allowed by booking/postgres-from-namespace#0") for o in impact.opened)
    # data-tier and the new policy select redis and postgres only: 10 sources x (1 + 2 declared ports)
    assert (impact.workloads, impact.affected_workloads, impact.judgements) == (11, 2, 30)
    assert not impact.truncated


def test_the_never_observed_search_stops_at_the_cap_and_says_so() -> None:
    with FLOWS.open("rb") as stream:
        impact = compute_impact(
            load_cluster([str(CLUSTER)]),
            [d.policy for d in load_policy_documents([str(IN_FORCE)])],
            [d.policy for d in load_policy_documents([str(OPENS_MORE)])],
            iter_flows(stream, str(FLOWS)),
            max_judgements=5,
        )
    assert impact.truncated and impact.judgements == 5
    assert impact.flows_opened == 4  # recorded flows are always replayed in full


def test_canonical_form_ignores_server_fields_and_applies_api_defaults() -> None:
    [file_doc] = [d for d in load_policy_documents([str(IN_FORCE)]) if d.key == "booking/web-from-ingress"]
    assert file_doc.obj["spec"]["policyTypes"] == ["Ingress"]
    assert file_doc.obj["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    stored = api_form(file_doc.obj)
    assert "uid" in stored["metadata"]
    [cluster_doc] = policy_documents([Document("api", stored)])
    assert cluster_doc.obj == file_doc.obj
    assert diff_policy_sets([file_doc], [cluster_doc]).changes[0].change is Change.UNCHANGED


def api_form(obj: dict[str, Any], number: int = 1) -> dict[str, Any]:
    """A policy as the API server returns it: policyTypes and port protocols defaulted, server-set
    metadata, the last-applied annotation."""
    meta = obj["metadata"]
    spec = copy.deepcopy(obj["spec"])
    spec.setdefault("policyTypes", ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    for rule in spec.get("ingress", []) + spec.get("egress", []):
        for port in rule.get("ports", []):
            port.setdefault("protocol", "TCP")
    return {
        **obj,
        "spec": spec,
        "metadata": {
            **meta,
            "uid": f"6f0e1c2a-0000-4000-8000-{number:012d}",
            "resourceVersion": str(1000 + number),
            "generation": 1,
            "creationTimestamp": "2026-11-20T08:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                               "apiVersion": "networking.k8s.io/v1", "time": "2026-11-20T08:00:00Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
        },
    }


# --- the command -----------------------------------------------------------------------------------


def test_identical_sets_exit_0_with_no_change_and_no_impact() -> None:
    code, report = json_diff()
    assert code == 0
    assert report["summary"]["policies"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 6}
    impact = report["impact"]
    assert (impact["flows"], impact["flows_broken"], impact["flows_newly_allowed"]) == (RECORDED, 0, 0)
    assert impact["breaking"] == impact["newly_allowed"] == impact["newly_opened_unobserved"] == []
    assert impact["unobserved_search"]["affected_workloads"] == 0


def test_dropped_rule_exits_3_and_text_names_the_cut_flows() -> None:
    result = run_diff(proposed=DROP_RULE)
    assert result.exit_code == 3, result.output
    out = result.stdout
    assert out.startswith("Policies: 1 changed (5 unchanged).\nBREAKS 1 connection seen in the recorded traffic: "
                          f"6 of {RECORDED} recorded flows would be denied.\n")
    assert "changed booking/data-tier" in out
    assert "-          app.kubernetes.io/name: booking\n" in out
    assert f"  {BOOKING} -> {REDIS} TCP/6379  x6 via booking/redis\n" in out
    assert "      now:      ingress: allowed by booking/data-tier#1\n" in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_opened_set_exits_1_with_added_and_changed_policies_and_their_diffs() -> None:
    code, report = json_diff(proposed=OPENS_MORE)
    assert code == 1
    changes = {c["policy"]: c for c in report["policies"]}
    assert changes["booking/postgres-from-namespace"]["change"] == "added"
    assert changes["booking/data-tier"]["change"] == "changed"
    assert sorted(k for k, c in changes.items() if c["change"] == "unchanged") == UNCHANGED_IN_FORCE
    added = changes["booking/postgres-from-namespace"]["diff"]
    assert added.startswith("--- /dev/null\n+++ b/booking/postgres-from-namespace\n@@ -0,0 +1,17 @@\n")
    assert "+    - port: postgres\n+      protocol: TCP\n" in added
    changed = changes["booking/data-tier"]["diff"]
    assert "+          app.kubernetes.io/name: auth\n" in changed
    assert not re.search(r"^-(?!--)", changed, re.MULTILINE)  # a rule was only added
    assert changes["booking/web-from-ingress"]["diff"] == ""
    impact = report["impact"]
    assert [(g["src"], g["dst"], g["port"], g["flows"]) for g in impact["newly_allowed"]] == [
        (REPORT, POSTGRES, 5432, 1), (AUTH, REDIS, 6379, 3)]
    assert [(o["src"], o["dst"], o["port"], o["port_name"]) for o in impact["newly_opened_unobserved"]] == [
        (src, POSTGRES, 5432, "postgres") for src in POSTGRES_OPENED_TO]


def test_removed_policy_is_listed_with_its_whole_yaml_as_removed_lines() -> None:
    code, report = json_diff(proposed=DROP_RULE, against=OPENS_MORE)
    assert code == 3  # auth -> redis and booking -> redis are both cut
    removed = next(c for c in report["policies"] if c["policy"] == "booking/postgres-from-namespace")
    assert removed["change"] == "removed"
    assert removed["diff"].startswith("--- a/booking/postgres-from-namespace\n+++ /dev/null\n@@ -1,17 +0,0 @@\n")
    assert [(g["src"], g["flows"]) for g in report["impact"]["breaking"]] == [
        (REPORT, 1), (AUTH, 3), (BOOKING, 6)]


def test_markdown_is_a_pull_request_comment() -> None:
    result = run_diff("--format", "markdown", proposed=DROP_RULE)
    assert result.exit_code == 3
    out = result.stdout
    assert out.startswith("## netpol-gen diff\n")
    assert f"- BREAKS 1 connection seen in the recorded traffic: 6 of {RECORDED} recorded flows would be " in out
    assert f'```mermaid\nflowchart LR\n  n0["{BOOKING}"]\n  n1["{REDIS}"]\n  n0 --x|"CUT: TCP/6379, 6 flows"| n1' in out
    assert "| `booking/data-tier` | changed |" in out
    assert "#### changed: `booking/data-tier`\n\n```diff\n--- a/booking/data-tier\n" in out
    assert "### Flows that would break (6 flows)" in out
    assert (f"| `{BOOKING}` | `{REDIS}` | TCP/6379 | 6 | booking/redis | ingress: allowed by booking/data-tier#1 "
            f"| {REDIS_DENIES} |") in out
    assert out.count("```") % 2 == 0


@pytest.mark.parametrize(("flag", "coloured"), [("--color", True), ("--no-color", False)])
def test_colour_follows_the_flag(flag: str, coloured: bool) -> None:
    result = run_diff(flag, proposed=DROP_RULE)
    assert ("\x1b[31m" in result.stdout) is coloured  # removed lines and cut flows in red


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proposed", "missing.yaml", "--against", str(IN_FORCE)], "missing.yaml: no such file or directory"),
        (["--proposed", str(IN_FORCE)], "give the policies in force with --against FILE|DIR or --against-cluster"),
        (["--proposed", str(IN_FORCE), "--against", str(IN_FORCE), "--against-cluster"],
         "give the policies in force with --against FILE|DIR or --against-cluster"),
        (["--proposed", str(CLUSTER), "--against", str(IN_FORCE)], "not a networking.k8s.io/v1 NetworkPolicy"),
        (["--proposed", str(IN_FORCE), "--against", str(IN_FORCE), "--against", str(IN_FORCE)],
         "duplicate of the policy at"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run_cli("diff", *args, "--cluster", str(CLUSTER), "--flows", str(FLOWS))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("netpol-gen: error: ")
    assert message in result.stderr


def test_bad_flow_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    flows = tmp_path / "flows.jsonl"
    flows.write_text(FLOWS.read_text().splitlines()[0] + '\n{"src_ip": "10.0.0.1"}\n')
    result = run_diff(flows=flows)
    assert result.exit_code == 2
    assert result.stderr == f"netpol-gen: error: {flows}:line 2: missing field 'dst_ip'\n"
