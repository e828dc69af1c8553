"""``netpol-gen import`` through click: what it prints, exit codes, one-line errors, store untouched."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import netpol_gen.model
from netpol_gen.model import Flow
from netpol_gen.store import schema as t
from netpol_gen.store.db import open_store
from tests.cli import run_cli
from tests.test_import import API_SVC, FRONTEND, SNAPSHOTS, at, edges, flow_file

CLUSTER_ARGS = [arg for path in SNAPSHOTS for arg in ("--cluster", path)]


def edge_count(url: str) -> int:
    store = open_store(url)
    try:
        with store.reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.edges)).scalar_one())
    finally:
        store.close()


def test_import_reports_what_it_did(store_url: str, tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00")),
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00") + 0.2),  # the same, on the other node
        Flow("10.244.1.5", FRONTEND, 8080, "TCP", src_port=2, ts=at("11:02:00")),  # nobody held it then
    ])
    result = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "sources imported: 1",
        "packets read: 0",
        "flows: 3 (duplicates dropped: 1, to a Service without such port or backend: 0)",
        "edges: 3 new, 0 updated",
        "unknown cluster IPs: 1",
        "flows without direction: 0",
        "DNS names learnt: 0",
    ]
    again = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", path)
    assert again.exit_code == 0
    assert f"sources imported: 0 (1 already in the store: {path})" in again.stdout
    assert "edges: 0 new, 0 updated" in again.stdout


def test_default_store_comes_from_the_environment(store_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETPOL_GEN_DB", store_url)
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"))])
    assert run_cli("import", *CLUSTER_ARGS, "--flows", path).exit_code == 0
    assert edge_count(store_url) == 2


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netpol-gen: error: "), result.stderr
    return lines[0]


def test_bad_flow_line_is_one_line_and_leaves_the_store_untouched(store_url: str, tmp_path: Path) -> None:
    good = flow_file(tmp_path / "good.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"))])
    assert run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", good).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Flow(FRONTEND, "10.244.2.20", 8080, "TCP").to_json() + "\n{not json\n")
    line = _one_line_error(run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", good, "--flows", str(bad)))
    assert line.startswith(f"netpol-gen: error: {bad}:line 2: not valid JSON")
    assert edge_count(store_url) == 2


def test_import_runs_with_the_collector_paused_and_leaves_it_running(store_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The command pauses the cyclic GC for its whole run (start-up included, issue #15), and the
    process it ran in (a test session here, as an embedding program would be) gets it back on after
    a good run and after bad input alike."""
    seen: list[bool] = []
    load_cluster = netpol_gen.model.load_cluster

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return load_cluster(*args, **kwargs)

    monkeypatch.setattr(netpol_gen.model, "load_cluster", spy)
    assert gc.isenabled()
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"))])
    assert run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", path).exit_code == 0
    assert seen == [False] and gc.isenabled()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    _one_line_error(run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--flows", str(bad)))
    assert seen == [False, False] and gc.isenabled()


def test_snapshot_without_pods_is_refused(store_url: str, tmp_path: Path) -> None:
    snapshot = tmp_path / "nodes.yaml"
    snapshot.write_text("apiVersion: v1\nkind: List\nitems: []\nmetadata:\n  resourceVersion: \"\"\n")
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP")])
    line = _one_line_error(run_cli("import", "--db", store_url, "--cluster", str(snapshot), "--flows", path))
    assert line == f"netpol-gen: error: {snapshot}: snapshot has no pods"


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP")])
    line = _one_line_error(run_cli("import", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test",
                                  *CLUSTER_ARGS, "--flows", path))
    assert "cannot open store" in line and "Connection refused" in line


def test_not_a_capture_is_one_line(store_url: str, tmp_path: Path) -> None:
    capture = tmp_path / "notes.pcap"
    capture.write_text("these are not packets\n")
    line = _one_line_error(run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--pcap", str(capture)))
    assert line.startswith(f"netpol-gen: error: {capture}")
    assert edge_count(store_url) == 0


def test_pcap_import_attributes_connections_and_learns_dns(store_url: str, tmp_path: Path) -> None:
    ts, external, resolver = at("10:30:00"), "198.51.100.5", "1.1.1.1"
    query = DNS(id=7, rd=1, qd=DNSQR(qname="api.stripe.com"))
    answer = DNS(id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname="api.stripe.com"),
                 an=DNSRR(rrname="api.stripe.com", type="A", ttl=60, rdata=external))
    packets = [
        Ether() / IP(src=FRONTEND, dst=resolver) / UDP(sport=33333, dport=53) / query,
        Ether() / IP(src=resolver, dst=FRONTEND) / UDP(sport=53, dport=33333) / answer,
        Ether() / IP(src=FRONTEND, dst=API_SVC) / TCP(sport=40000, dport=80, flags="S", seq=100),
        Ether() / IP(src=API_SVC, dst=FRONTEND) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
        Ether() / IP(src=FRONTEND, dst=external) / TCP(sport=40001, dport=443, flags="S", seq=200),
    ]
    for offset, packet in enumerate(packets):
        packet.time = ts + offset * 0.01
    capture = tmp_path / "node-a.pcap"
    wrpcap(str(capture), packets)
    result = run_cli("import", "--db", store_url, *CLUSTER_ARGS, "--pcap", str(capture))
    assert result.exit_code == 0, result.output
    assert "DNS names learnt: 1" in result.stdout
    found = edges(store_url)
    assert set(found) == {
        ("shop/Deployment/frontend", "shop/Deployment/api-v1", 8080, "TCP"),
        ("shop/Deployment/frontend", "shop/Deployment/api-v2", 9090, "TCP"),
        ("shop/Deployment/frontend", f"external/{external}", 443, "TCP"),
        ("shop/Deployment/frontend", f"external/{resolver}", 53, "UDP"),
    }
    assert found[("shop/Deployment/frontend", f"external/{external}", 443, "TCP")].dst_names == ("api.stripe.com",)
