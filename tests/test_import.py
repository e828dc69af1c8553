"""Ingest into the store: attribution in time, Services, SNAT, dedupe, idempotence, atomicity, DNS.

Every test runs on SQLite and on PostgreSQL (``store_url``). The cluster is two snapshots of a small
shop (tests/data/store-cluster-t*.yaml): cache-0 (10.244.1.5) is deleted at 11:00 and reports takes
its IP at 11:05; Service shop/api (10.96.10.10:80, targetPort ``http``) selects api-v1 (http=8080)
and api-v2 (http=9090); Service shop/frontend is a NodePort (30080 -> 8080).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from netpol_gen.errors import FlowError, InputError
from netpol_gen.ingest.dns import DnsAnswer
from netpol_gen.ingest.importer import ImportReport, import_sources
from netpol_gen.ingest.pipeline import SAMPLES_PER_EDGE, Ingest
from netpol_gen.ingest.sources import Source, file_digest
from netpol_gen.model import Flow, load_cluster
from netpol_gen.model.listings import EdgeRow
from netpol_gen.store import schema as t
from netpol_gen.store import writer
from netpol_gen.store.db import open_store
from netpol_gen.store.query import list_edges

DATA = Path(__file__).parent / "data"
SNAPSHOTS = [str(DATA / "store-cluster-t1.yaml"), str(DATA / "store-cluster-t2.yaml")]


def at(clock: str) -> float:
    return datetime.fromisoformat(f"2026-11-20T{clock}+00:00").timestamp()


FRONTEND, API_V1, API_V2 = "10.244.1.10", "10.244.2.20", "10.244.2.21"
REUSED = "10.244.1.5"  # cache-0 until 11:00, nobody until 11:05, then reports
API_SVC = "10.96.10.10"


def flow_file(path: Path, flows: list[Flow]) -> str:
    path.write_text("".join(f.to_json() + "\n" for f in flows))
    return str(path)


def run_import(url: str, *paths: str) -> ImportReport:
    store = open_store(url)
    try:
        return import_sources(store, load_cluster(SNAPSHOTS), [Source(p, "flows") for p in paths])
    finally:
        store.close()


def edges(url: str) -> dict[tuple[str, str, int, str], EdgeRow]:
    store = open_store(url)
    try:
        with store.reading() as conn:
            return {(e.src.describe(), e.dst.describe(), e.dst_port, e.protocol): e for e in list_edges(conn)}
    finally:
        store.close()


def table_rows(url: str, table: sa.Table) -> list[sa.Row[tuple[object, ...]]]:
    """All rows, in primary key order (comparable between two reads)."""
    store = open_store(url)
    try:
        with store.reading() as conn:
            return list(conn.execute(sa.select(table).order_by(*table.primary_key.columns)))
    finally:
        store.close()


def test_ip_reused_after_restart_keeps_old_traffic_on_old_pod(store_url: str, tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [
        Flow(REUSED, API_V1, 8080, "TCP", src_port=40001, ts=at("10:30:00")),
        Flow(REUSED, API_V1, 8080, "TCP", src_port=40002, ts=at("11:02:00")),
        Flow(REUSED, API_V1, 8080, "TCP", src_port=40003, ts=at("11:30:00")),
        Flow(FRONTEND, REUSED, 6379, "TCP", src_port=40004, ts=at("10:45:00")),
    ])
    report = run_import(store_url, path)
    assert set(edges(store_url)) == {
        ("shop/StatefulSet/cache", "shop/Deployment/api-v1", 8080, "TCP"),
        ("unknown/10.244.1.5", "shop/Deployment/api-v1", 8080, "TCP"),
        ("shop/Deployment/reports", "shop/Deployment/api-v1", 8080, "TCP"),
        ("shop/Deployment/frontend", "shop/StatefulSet/cache", 6379, "TCP"),
    }
    assert report.unknown_ips == 1


def test_cluster_ip_becomes_backends_on_their_named_target_port(store_url: str, tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=40001, ts=at("10:30:00"), packets=10, bytes=1200),
    ])
    run_import(store_url, path)
    found = edges(store_url)
    assert set(found) == {
        ("shop/Deployment/frontend", "shop/Deployment/api-v1", 8080, "TCP"),
        ("shop/Deployment/frontend", "shop/Deployment/api-v2", 9090, "TCP"),
    }
    assert all(e.dst.ip is None and e.connections == 1 and e.bytes == 1200 for e in found.values())
    samples = table_rows(store_url, t.edge_samples)
    # the evidence keeps the wire address and the Service; the backend pod is known per workload
    assert {(s.dst_ip, s.dst_port, s.service) for s in samples} == {(API_SVC, 80, "shop/api")}
    api_v1_uid, api_v2_uid = "7f5d4a6b-1ba6-4c23-8a5f-8b6c7d9e0f08", "9b7f6c8d-3dc8-4e45-8c7b-0d8e9f1a2b10"
    assert {s.dst_pod_uid for s in samples} == {api_v1_uid, api_v2_uid}


def test_service_address_without_that_port_is_not_an_edge(store_url: str, tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 443, "TCP", src_port=1, ts=at("10:30:00"))])
    report = run_import(store_url, path)
    assert report.service_unresolved == 1
    assert edges(store_url) == {}


def test_nodeport_traffic_snated_to_a_node_comes_from_that_node(store_url: str, tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [
        # seen on the backend's node after kube-proxy masqueraded the client to node-b's address
        Flow("192.168.0.12", FRONTEND, 8080, "TCP", src_port=50001, ts=at("10:30:00")),
        # masqueraded to node-a's bridge address (first address of its pod CIDR)
        Flow("10.244.1.1", FRONTEND, 8080, "TCP", src_port=50002, ts=at("10:30:00")),
        # seen on the ingress node before DNAT: external client to node-a:30080
        Flow("203.0.113.7", "192.168.0.11", 30080, "TCP", src_port=50003, ts=at("10:30:00")),
    ])
    run_import(store_url, path)
    assert set(edges(store_url)) == {
        ("node/node-b", "shop/Deployment/frontend", 8080, "TCP"),
        ("node/node-a", "shop/Deployment/frontend", 8080, "TCP"),
        ("external/203.0.113.7", "shop/Deployment/frontend", 8080, "TCP"),
    }


def test_same_connection_seen_on_two_nodes_counts_once(store_url: str, tmp_path: Path) -> None:
    conn = Flow(FRONTEND, API_V1, 8080, "TCP", src_port=40001, ts=at("10:30:00"), packets=10)
    on_a = flow_file(tmp_path / "node-a.jsonl", [
        conn,
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=40001, ts=at("10:31:00"), packets=4),  # port reused later
        Flow(FRONTEND, API_V1, 8080, "TCP", ts=at("10:30:00")),  # no source port: never deduplicated
    ])
    on_b = flow_file(tmp_path / "node-b.jsonl", [
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=40001, ts=at("10:30:00") + 0.4, packets=10),
        Flow(FRONTEND, API_V1, 8080, "TCP", ts=at("10:30:00")),
    ])
    report = run_import(store_url, on_a, on_b)
    assert report.duplicates == 1
    edge = edges(store_url)[("shop/Deployment/frontend", "shop/Deployment/api-v1", 8080, "TCP")]
    assert (edge.connections, edge.packets) == (4, 14)


def test_importing_the_same_content_again_adds_nothing(store_url: str, tmp_path: Path) -> None:
    flows = [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=40000 + i, ts=at("10:30:00") + i) for i in range(5)]
    path = flow_file(tmp_path / "f.jsonl", flows)
    first = run_import(store_url, path)
    before = edges(store_url)
    copy = flow_file(tmp_path / "copy.jsonl", flows)
    again = run_import(store_url, path, copy)
    assert (first.edges_new, again.edges_new, again.edges_updated) == (2, 0, 0)
    assert again.skipped == [path, copy] and again.flows == 0
    assert edges(store_url) == before
    assert len(table_rows(store_url, t.imports)) == 1


def test_the_same_bytes_as_another_kind_are_another_import(store_url: str, tmp_path: Path) -> None:
    """Issue #10: the content hash covers the kind, so flows bytes offered as a pcap are read (and refused
    as a capture), not skipped as "already in the store"."""
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"))])
    run_import(store_url, path)
    store = open_store(store_url)
    try:
        with pytest.raises(InputError, match=r"f\.jsonl"):
            import_sources(store, load_cluster(SNAPSHOTS), [Source(path, "pcap")])
    finally:
        store.close()


def test_a_file_recorded_by_the_content_only_hash_of_older_stores_is_still_known(store_url: str,
                                                                               tmp_path: Path) -> None:
    path = flow_file(tmp_path / "f.jsonl", [Flow(FRONTEND, API_SVC, 80, "TCP", src_port=1, ts=at("10:30:00"))])
    run_import(store_url, path)
    legacy = file_digest(path, "flows").legacy
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # what a store written before the kinded hash holds
        conn.execute(sa.update(t.imports).values(content_hash=legacy))
    engine.dispose()
    assert run_import(store_url, path).skipped == [path]


def test_a_new_file_adds_to_existing_edges(store_url: str, tmp_path: Path) -> None:
    key = ("shop/Deployment/frontend", "shop/Deployment/api-v1", 8080, "TCP")
    run_import(store_url, flow_file(tmp_path / "1.jsonl", [
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=1, ts=at("10:30:00")),
    ]))
    assert edges(store_url)[key].packets is None  # no counters seen yet: unknown, not zero
    report = run_import(store_url, flow_file(tmp_path / "2.jsonl", [
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=2, ts=at("10:20:00"), packets=3, bytes=300),
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=3, ts=at("10:40:00"), packets=5, bytes=500),
    ]))
    assert (report.edges_new, report.edges_updated) == (0, 1)
    edge = edges(store_url)[key]
    assert (edge.connections, edge.packets, edge.bytes) == (3, 8, 800)
    assert (edge.first_seen, edge.last_seen) == (at("10:20:00"), at("10:40:00"))


def test_crash_while_writing_leaves_the_store_as_before(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_import(store_url, flow_file(tmp_path / "1.jsonl", [
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=1, ts=at("10:30:00")),
    ]))
    tables = (t.edges, t.edge_samples, t.identities, t.imports, t.endpoints)
    before = {table.name: table_rows(store_url, table) for table in tables}

    def crash(*_: object) -> None:  # after the edges were upserted, before their samples
        raise RuntimeError("power cut")

    monkeypatch.setattr(writer, "_write_evidence", crash)
    second = flow_file(tmp_path / "2.jsonl", [
        Flow(FRONTEND, API_V1, 8080, "TCP", src_port=2, ts=at("10:31:00")),
        Flow(FRONTEND, API_SVC, 80, "TCP", src_port=3, ts=at("10:32:00")),
    ])
    with pytest.raises(RuntimeError, match="power cut"):
        run_import(store_url, second)
    assert {table.name: table_rows(store_url, table) for table in tables} == before
    monkeypatch.undo()
    assert run_import(store_url, second).imported == [second]  # not recorded as imported by the crash


def test_bad_line_aborts_before_anything_is_written(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    flow_file(path, [Flow(FRONTEND, API_V1, 8080, "TCP", src_port=1, ts=at("10:30:00"))] * 2)
    path.write_text(path.read_text() + '{"src_ip": "10.0.0.1"}\n')
    with pytest.raises(FlowError, match=r"f\.jsonl:line 3: missing field 'dst_ip'"):
        run_import(store_url, str(path))
    assert table_rows(store_url, t.edges) == [] and table_rows(store_url, t.imports) == []


def test_dns_names_are_attached_to_the_external_ips_they_resolved_to(store_url: str) -> None:
    ingest = Ingest(load_cluster(SNAPSHOTS))
    ingest.add_dns(DnsAnswer(at("10:00:00"), "old.example.net", "198.51.100.5", 30))  # expired long before
    ingest.add_dns(DnsAnswer(at("10:29:58"), "api.stripe.com", "198.51.100.5", 60))
    ingest.add_dns(DnsAnswer(at("10:29:58"), "cdn.example.org", "198.51.100.9", 60))  # never connected to
    ingest.add_flow(Flow(FRONTEND, "198.51.100.5", 443, "TCP", src_port=1, ts=at("10:30:00")))
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            result = writer.write_batch(conn, ingest.take_batch())
        with store.reading() as conn:
            (edge,) = list_edges(conn)
    finally:
        store.close()
    assert result.dns_answers == 3
    assert (edge.dst.describe(), edge.dst_names) == ("external/198.51.100.5", ("api.stripe.com",))
    assert len(table_rows(store_url, t.dns_answers)) == 3


def test_evidence_is_bounded_per_edge_across_batches(store_url: str) -> None:
    ingest = Ingest(load_cluster(SNAPSHOTS))
    store = open_store(store_url)
    try:
        for batch in range(2):
            for i in range(SAMPLES_PER_EDGE + 3):
                ingest.add_flow(Flow(FRONTEND, API_V1, 8080, "TCP", src_port=1000 * batch + i, ts=at("10:30:00") + i))
            with store.transaction() as conn:
                writer.write_batch(conn, ingest.take_batch())
        with store.reading() as conn:
            (edge,) = list_edges(conn)
    finally:
        store.close()
    samples = table_rows(store_url, t.edge_samples)
    assert edge.connections == 2 * (SAMPLES_PER_EDGE + 3)
    assert len(samples) == SAMPLES_PER_EDGE
    assert {s.src_port for s in samples} == set(range(SAMPLES_PER_EDGE))  # the first batch's, in order
