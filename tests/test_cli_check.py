"""``netpol-gen check`` end to end: reports, formats, exit codes and one-line errors for bad input.

The cluster is tests/data/snapshot-kubectl-list-yaml; the policies (tests/data/check-basic) isolate
shop's ingress, let web take "http" from any pod of shop, db take 5432 from api, and let the debug pod
reach only web on 8080. The five flows of check-basic/flows.jsonl are, in order:

1. debug -> web-...-abcde 8080         allowed (egress debug-egress#0, ingress web-ingress#0)
2. debug -> db-0 5432                  denied on both sides
3. api-...-aaaaa -> db-0 5432          allowed (ingress db-ingress#0)
4. 198.51.100.7 -> Service web :80     denied on web-...-abcde's ingress (the only ready backend, 8080)
5. debug -> web-...-abcde 8080 again   allowed
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import CliOutcome, run_cli

DATA = Path(__file__).parent / "data"
SNAPSHOT = DATA / "snapshot-kubectl-list-yaml" / "cluster.yaml"
POLICIES = DATA / "check-basic" / "policies.yaml"
FLOWS = DATA / "check-basic" / "flows.jsonl"
BAD_FLOWS = DATA / "check-bad-flows" / "flows.jsonl"

WEB = "shop/web-7d9f8b6c5d-abcde (Deployment/web)"
DEBUG = "shop/debug (Pod/debug)"
DB = "shop/db-0 (StatefulSet/db)"
API = "shop/api-5b6c7d8e9f-aaaaa (Deployment/api)"

EXPECTED_BY_POLICY = {
    "shop/db-ingress": {"admitted": 1, "denied": 1},
    "shop/debug-egress": {"admitted": 2, "denied": 1},
    "shop/default-deny-ingress": {"admitted": 0, "denied": 2},
    "shop/web-ingress": {"admitted": 2, "denied": 1},
}


def run_check(
    *extra: str,
    cluster: Path = SNAPSHOT,
    policies: Path = POLICIES,
    flows: Path | str = FLOWS,
    stdin: str | None = None,
) -> CliOutcome:
    args = ["check", "--cluster", str(cluster), "--policies", str(policies), "--flows", str(flows), *extra]
    return run_cli(*args, input=stdin)


def json_report(*extra: str, **kwargs: Any) -> dict[str, Any]:
    result = run_check("--format", "json", *extra, **kwargs)
    assert result.exit_code in (0, 1), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def jsonl_records(result: CliOutcome) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result: CliOutcome, starts: str) -> str:
    """Exit 2, nothing but one ``netpol-gen: error:`` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"netpol-gen: error: {starts}"), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def lines_under(stdout: str, heading: str) -> list[str]:
    """The indented lines of a section of the text report."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    section = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        section.append(line)
    return section


# --- text report --------------------------------------------------------------------------------


def test_text_report_counts_flows_and_exits_1_when_any_is_denied() -> None:
    result = run_check()
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "flows: 5  allowed: 3  denied: 2  (via a Service: 1)"
    assert result.stderr == ""


def test_text_report_lists_each_denied_connection_with_the_denying_side_and_policies() -> None:
    denied = lines_under(run_check().stdout, "denied (2 distinct connections)")
    assert len(denied) == 2
    (both_sides,) = [line for line in denied if line.startswith(f"  {DEBUG} -> {DB} TCP/5432")]
    assert f"egress of {DEBUG} denied: isolated by shop/debug-egress and no rule allows it" in both_sides
    assert f"ingress of {DB} denied: isolated by shop/default-deny-ingress, shop/db-ingress" in both_sides
    (via_service,) = [line for line in denied if line.startswith(f"  198.51.100.7 -> {WEB} TCP/8080")]
    assert "ingress of" in via_service and "egress of" not in via_service
    assert "shop/web-ingress" in via_service


def test_text_report_tallies_flows_per_policy() -> None:
    stdout = run_check().stdout
    for name, counts in EXPECTED_BY_POLICY.items():
        (row,) = [line for line in stdout.splitlines() if line.startswith(f"{name} ")]
        assert row.split()[1:] == [str(counts["admitted"]), str(counts["denied"])]


def test_explain_names_the_policy_rules_that_admitted_each_allowed_connection() -> None:
    stdout = run_check("--explain").stdout
    allowed = lines_under(stdout, "allowed (2 distinct connections)")
    (debug_to_web,) = [line for line in allowed if line.startswith(f"  {DEBUG} -> {WEB} TCP/8080  x2")]
    assert "shop/debug-egress#0" in debug_to_web and "shop/web-ingress#0" in debug_to_web
    (api_to_db,) = [line for line in allowed if line.startswith(f"  {API} -> {DB} TCP/5432  x1")]
    assert "shop/db-ingress#0" in api_to_db


def test_without_explain_allowed_connections_are_not_listed() -> None:
    assert "allowed (" not in run_check().stdout


# --- JSON and JSONL -----------------------------------------------------------------------------


def test_json_report_has_summary_and_denied_connections() -> None:
    report = json_report()
    assert set(report) == {"summary", "denied"}
    assert report["summary"] == {
        "flows": 5,
        "allowed": 3,
        "denied": 2,
        "via_service": 1,
        "by_policy": EXPECTED_BY_POLICY,
        "bad_lines_skipped": 0,
    }
    by_pair = {(entry["src"], entry["dst"]): entry for entry in report["denied"]}
    assert set(by_pair) == {(DEBUG, DB), ("198.51.100.7", WEB)}
    both = by_pair[(DEBUG, DB)]
    assert (both["port"], both["protocol"], both["allowed"], both["flows"]) == (5432, "TCP", False, 1)
    assert both["egress"]["allowed"] is False and both["egress"]["isolating_policies"] == ["shop/debug-egress"]
    assert both["ingress"]["isolating_policies"] == ["shop/default-deny-ingress", "shop/db-ingress"]
    external = by_pair[("198.51.100.7", WEB)]
    assert external["port"] == 8080  # the targetPort on the pod, not the Service port 80
    assert external["egress"]["basis"] == "not_a_pod" and external["egress"]["allowed"] is True
    assert "admitted_by" not in external["ingress"]


def test_json_report_with_explain_lists_allowed_connections_and_their_rules() -> None:
    report = json_report("--explain")
    by_pair = {(entry["src"], entry["dst"]): entry for entry in report["allowed"]}
    assert set(by_pair) == {(DEBUG, WEB), (API, DB)}
    assert by_pair[(DEBUG, WEB)]["flows"] == 2
    assert by_pair[(DEBUG, WEB)]["egress"]["admitted_by"] == ["shop/debug-egress#0"]
    assert by_pair[(DEBUG, WEB)]["ingress"]["admitted_by"] == ["shop/web-ingress#0"]
    assert by_pair[(API, DB)]["ingress"]["admitted_by"] == ["shop/db-ingress#0"]


def test_jsonl_writes_one_record_per_input_flow_in_input_order() -> None:
    result = run_check("--format", "jsonl")
    assert result.exit_code == 1
    records = jsonl_records(result)
    assert [(r["flow"]["src_port"], r["allowed"]) for r in records] == [
        (40001, True),
        (40002, False),
        (51000, True),
        (61000, False),
        (40003, True),
    ]
    via_service = records[3]
    assert via_service["flow"]["dst_ip"] == "10.96.10.10" and via_service["flow"]["dst_port"] == 80
    assert via_service["flow"]["protocol"] == "TCP"
    assert via_service["service"] == "shop/web"
    assert (via_service["dst"], via_service["port"]) == (WEB, 8080)
    assert records[0]["flow"]["ts"] == 1705316400.0  # 2024-01-15T11:00:00Z
    assert "service" not in records[0]


def test_flows_can_come_from_stdin() -> None:
    allowed_only = "".join(line for i, line in enumerate(FLOWS.read_text().splitlines(True)) if i in (0, 2))
    result = run_check(flows="-", stdin=allowed_only)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "flows: 2  allowed: 2  denied: 0  (via a Service: 0)"


def test_flows_from_stdin_and_from_the_file_give_the_same_report() -> None:
    assert json_report(flows="-", stdin=FLOWS.read_text()) == json_report()


# --- policy sets --------------------------------------------------------------------------------


def test_empty_policy_file_is_an_empty_set_so_everything_is_allowed() -> None:
    result = run_check(policies=DATA / "check-empty-policies" / "empty.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "flows: 5  allowed: 5  denied: 0  (via a Service: 1)"


def test_directory_of_policies_gives_the_same_report_as_one_file() -> None:
    from_directory = json_report(policies=DATA / "check-policies-dir")
    assert from_directory["summary"]["by_policy"] == EXPECTED_BY_POLICY
    assert from_directory == json_report()


# --- bad input ----------------------------------------------------------------------------------


def test_invalid_policy_is_one_line_naming_file_document_and_policy() -> None:
    path = DATA / "check-invalid-policy" / "policies.yaml"
    line = assert_one_line_error(run_check(policies=path), f"{path}:doc 2: policy shop/bad-port: ")
    assert "70000" in line


def test_bad_flow_line_is_one_line_naming_file_and_line_number() -> None:
    line = assert_one_line_error(run_check(flows=BAD_FLOWS), f"{BAD_FLOWS}:line 3: ")
    assert "dst_port" in line


def test_bad_flow_line_on_stdin_is_named_stdin() -> None:
    result = run_check(flows="-", stdin='{"src_ip": "10.244.1.50"}\n')
    assert_one_line_error(result, "<stdin>:line 1: ")


def test_jsonl_stops_with_exit_2_at_a_bad_line_after_reporting_the_flows_before_it() -> None:
    result = run_check("--format", "jsonl", flows=BAD_FLOWS)
    assert_one_line_error(result, f"{BAD_FLOWS}:line 3: ")
    assert [r["allowed"] for r in jsonl_records(result)] == [True, True]


@pytest.mark.parametrize("option", ["cluster", "policies", "flows"])
def test_missing_input_file_is_one_line_naming_it(tmp_path: Path, option: str) -> None:
    missing = tmp_path / f"no-{option}.yaml"
    line = assert_one_line_error(run_check(**{option: missing}), f"{missing}: ")  # type: ignore[arg-type]
    assert "no such file or directory" in line.lower()


def test_bad_snapshot_is_one_line_naming_file_item_and_object() -> None:
    path = DATA / "snapshot-bad-input" / "bad-pod-ip.yaml"
    line = assert_one_line_error(run_check(cluster=path), f"{path}:doc 1 item 1: Pod shop/web-1: ")
    assert "10.244.1.300" in line


def test_invalid_yaml_snapshot_is_one_line_with_the_line_number() -> None:
    path = DATA / "snapshot-bad-input" / "invalid-yaml.yaml"
    assert_one_line_error(run_check(cluster=path), f"{path}: invalid YAML: line 8: ")


def test_skip_bad_lines_counts_the_skipped_lines_and_judges_the_rest() -> None:
    result = run_check("--skip-bad-lines", flows=BAD_FLOWS)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0] == (
        "flows: 3  allowed: 2  denied: 1  (via a Service: 0, bad lines skipped: 2)"
    )
    report = json_report("--skip-bad-lines", flows=BAD_FLOWS)
    assert (report["summary"]["flows"], report["summary"]["bad_lines_skipped"]) == (3, 2)


# --- the installed command ----------------------------------------------------------------------


def installed_command() -> str:
    script = Path(sys.executable).parent / "netpol-gen"
    assert script.exists(), f"console script not installed next to {sys.executable}"
    return str(script)


def test_installed_console_script_reports_and_exits_like_the_cli() -> None:
    done = subprocess.run(
        [installed_command(), "check", "--cluster", str(SNAPSHOT), "--policies", str(POLICIES),
         "--flows", "-", "--format", "jsonl"],
        input=FLOWS.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert [json.loads(line)["allowed"] for line in done.stdout.splitlines()] == [True, False, True, False, True]


def test_installed_console_script_reports_bad_input_in_one_line() -> None:
    done = subprocess.run(
        [installed_command(), "check", "--cluster", str(SNAPSHOT), "--policies", str(POLICIES),
         "--flows", str(BAD_FLOWS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"netpol-gen: error: {BAD_FLOWS}:line 3: missing field 'dst_port'"]
