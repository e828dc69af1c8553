"""``netpol-gen diff --db``: the store supplies what is not given - the proposed set synthesized with
``export``'s options, the learned pods and Services as the cluster, its sample flows as the recorded
traffic. On SQLite and PostgreSQL, with the ticket-booking capture imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
CLUSTER, FLOWS, IN_FORCE = EXAMPLE / "cluster.yaml", EXAMPLE / "flows.jsonl", EXAMPLE / "policies"


def json_diff(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli("diff", "--format", "json", *args)
    assert code in (0, 1, 3), err
    report: dict[str, Any] = json.loads(out)
    return code, report


def connections(groups: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(g["src"], g["dst"], g["port"]) for g in groups}


@pytest.fixture
def learned(store_url: str, tmp_path: Path) -> tuple[str, Path]:
    code, _, err = run_cli("import", "--db", store_url, "--cluster", str(CLUSTER), "--pcap",
                           str(EXAMPLE / "capture.pcap"))
    assert code == 0, err
    code, _, err = run_cli("export", "--db", store_url, "--output-dir", str(tmp_path / "exported"))
    assert code == 0, err
    return store_url, tmp_path / "exported"


def test_the_store_against_its_own_export_changes_nothing(learned: tuple[str, Path]) -> None:
    db, exported = learned
    code, report = json_diff("--db", db, "--against", str(exported))
    assert code == 0
    assert report["summary"]["policies"]["unchanged"] > 0 and not report["summary"]["policies"].get("changed")
    impact = report["impact"]
    assert impact["flows"] > 80 and impact["flows_broken"] == 0 and impact["flows_newly_allowed"] == 0


def test_against_the_policies_in_force_it_agrees_with_the_file_based_diff(learned: tuple[str, Path]) -> None:
    """Same proposed set, cluster and traffic from the store or from files: the same connections open."""
    db, exported = learned
    code_db, from_store = json_diff("--db", db, "--against", str(IN_FORCE))
    code_files, from_files = json_diff("--proposed", str(exported), "--against", str(IN_FORCE),
                                       "--cluster", str(CLUSTER), "--flows", str(FLOWS))
    assert code_db == code_files == 1
    assert from_store["policies"] == from_files["policies"]
    assert connections(from_store["impact"]["newly_allowed"]) == connections(from_files["impact"]["newly_allowed"])
    assert from_store["impact"]["flows_broken"] == 0


def test_synthesis_options_apply_and_proposed_files_still_win(learned: tuple[str, Path]) -> None:
    db, exported = learned
    code, report = json_diff("--db", db, "--against", str(exported), "--ingress-only")
    assert code == 1 and report["summary"]["policies"]["changed"] > 0
    code, report = json_diff("--db", db, "--proposed", str(exported), "--against", str(exported), "--ingress-only")
    assert code == 0  # the files are the proposed set; the store gives cluster and flows


def test_without_db_the_three_inputs_are_required() -> None:
    code, _, err = run_cli("diff", "--against", str(IN_FORCE), "--proposed", str(IN_FORCE))
    assert code == 2 and "or --db/--server to take what is missing from the store" in err
