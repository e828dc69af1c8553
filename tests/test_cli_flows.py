"""``netpol-gen flows``: the stored edges as a table, JSON or CSV, filtered by namespace."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from netpol_gen.model import Flow
from netpol_gen.store.schema import SCHEMA_VERSION
from tests.cli import run_cli
from tests.test_import import API_SVC, FRONTEND, REUSED, at, flow_file, run_import
from tests.test_store import set_schema_version


@pytest.fixture
def imported(store_url: str, tmp_path: Path) -> str:
    run_import(store_url, flow_file(tmp_path / "f.jsonl", [
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"), packets=4, bytes=400),
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=2, ts=at("10:40:00"), packets=6, bytes=600),
        Flow("192.168.0.12", FRONTEND, 8080, "TCP", src_port=3, ts=at("10:35:00")),
        Flow(REUSED, "203.0.113.9", 443, "TCP", src_port=4, ts=at("10:36:00")),
    ]))
    return store_url


def test_json_lists_workload_edges_with_counts_and_times(imported: str) -> None:
    result = run_cli("flows", "--db", imported, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0] == {
        "source": {"kind": "pod", "namespace": "shop", "workload_kind": "Deployment", "workload_name": "frontend",
                   "node": None, "ip": None},
        "destination": {"kind": "pod", "namespace": "shop", "workload_kind": "Deployment",
                        "workload_name": "api-v1", "node": None, "ip": None},
        "port": 8080, "protocol": "TCP", "connections": 2, "unanswered": 0, "packets": 10, "bytes": 1000,
        "first_seen": "2026-11-20T10:30:00Z", "last_seen": "2026-11-20T10:40:00Z", "names": [],
    }
    assert len(rows) == 4


def test_csv_has_a_header_and_one_row_per_edge(imported: str) -> None:
    result = run_cli("flows", "--db", imported, "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {(r["source"], r["destination"], r["port"], r["connections"]) for r in rows} == {
        ("shop/Deployment/frontend", "shop/Deployment/api-v1", "8080", "2"),
        ("shop/Deployment/frontend", "shop/Deployment/api-v2", "9090", "2"),
        ("node/node-b", "shop/Deployment/frontend", "8080", "1"),
        ("shop/StatefulSet/cache", "external/203.0.113.9", "443", "1"),
    }


def test_table_names_both_ends(imported: str) -> None:
    result = run_cli("flows", "--db", imported)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "source" in lines[0] and "connections" in lines[0]
    assert any("node/node-b" in line and "shop/Deployment/frontend" in line for line in lines[1:])
    assert len(lines) == 5


def test_namespace_filter_keeps_edges_with_an_end_in_it(imported: str) -> None:
    result = run_cli("flows", "--db", imported, "--namespace", "kube-system", "--format", "csv")
    assert result.stdout.splitlines() == [
        "source,destination,port,protocol,connections,packets,bytes,first_seen,last_seen,names,unanswered"
    ]
    shop = run_cli("flows", "--db", imported, "--namespace", "shop", "--format", "json")
    assert len(json.loads(shop.stdout)) == 4


def test_schema_mismatch_is_a_one_line_error(store_url: str) -> None:
    run_import(store_url)
    set_schema_version(store_url, SCHEMA_VERSION + 1)
    result = run_cli("flows", "--db", store_url)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "store has schema version" in result.stderr


def test_missing_store_is_an_error_not_a_new_empty_one(tmp_path: Path) -> None:
    result = run_cli("flows", "--db", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert result.exit_code == 2
    assert "no store here (run netpol-gen import first)" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


