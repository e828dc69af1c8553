"""The grouped import path against the simple one: ``import --flows`` aggregates flows per connection
and stretch of the cluster view before attributing each group once; this stands in for the check that
it stores exactly what attributing every flow on its own stores, on the benchmark generator's
issue-#15 shape (Service backends, pods replaced mid-window and their IPs reused, IPv6, internet
addresses), with duplicates, untimed flows and other spellings of addresses and protocols added.

The simple path is written out here: per flow, dedupe (same 5-tuple within the second before or
after one kept), attribute with a fresh :class:`Attributor`
(no cache shared between flows), add to the edge, keep the edge's first samples in input order.
Both batches go through the same writer, so what is compared is what the store holds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bench import gen_cluster
from netpol_gen.ingest.attribute import Attributor
from netpol_gen.ingest.importer import import_sources
from netpol_gen.ingest.pipeline import SAMPLES_PER_EDGE
from netpol_gen.ingest.sources import Source
from netpol_gen.model import Flow, iter_flows, load_cluster
from netpol_gen.model.aggregate import Batch, EdgeTotals, Sample
from netpol_gen.model.cluster import Cluster
from netpol_gen.store import schema as t
from netpol_gen.store.db import open_store
from netpol_gen.store.writer import write_batch, write_cluster


def per_flow_batch(cluster: Cluster, flows: list[Flow]) -> Batch:
    """Every flow attributed on its own: the definition the grouped path must agree with."""
    started: set[tuple[object, ...]] = set()  # (5-tuple, second) of each connection kept
    batch = Batch()
    for flow in flows:
        if flow.src_port is not None and flow.ts is not None:
            conn, second = (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol), int(flow.ts)
            if any((conn, near) in started for near in (second - 1, second, second + 1)):
                continue  # the same connection seen again within a second: a duplicate
            started.add((conn, second))
        attributor = Attributor(cluster)
        destination, source = attributor.destination(flow), attributor.source(flow)
        for target in destination.targets:
            key = (source.identity, target.end.identity, target.port, flow.protocol)
            totals = batch.edges.setdefault(key, EdgeTotals())
            totals.count(flow.ts, flow.packets, flow.bytes)
            if len(totals.samples) < SAMPLES_PER_EDGE:
                totals.samples.append(Sample(flow.ts, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port,
                                             source.pod_uid, target.end.pod_uid, destination.service,
                                             flow.packets, flow.bytes))
    return batch


def _respelt(line: bytes, index: int) -> bytes:
    """The same flow written differently: protocol in lower case, IPv6 addresses uncompressed, every
    fifth without a timestamp, every seventh twice (a duplicate), as other tools write them."""
    record: dict[str, Any] = json.loads(line)
    record["protocol"] = record["protocol"].lower()
    for field in ("src_ip", "dst_ip"):
        address = ipaddress.ip_address(record[field])
        if address.version == 6:
            record[field] = address.exploded.upper()
    if index % 5 == 0:
        del record["ts"]
    text = json.dumps(record).encode() + b"\n"
    return text * 2 if index % 7 == 0 else text


def _stored(url: str) -> dict[str, Any]:
    """What the store holds about edges, by natural keys (ids differ between stores)."""
    e, i = t.edges.c, t.identities.c
    src, dst = t.identities.alias("src"), t.identities.alias("dst")
    store = open_store(url)
    try:
        with store.reading() as conn:
            keys = {row.id: (row.src, row.dst, row.dst_port, row.protocol) for row in conn.execute(
                sa.select(e.id, src.c.key.label("src"), dst.c.key.label("dst"), e.dst_port, e.protocol)
                .join(src, src.c.id == e.src_id).join(dst, dst.c.id == e.dst_id))}
            edges = {keys[row.id]: (row.connections, row.packets, row.bytes, row.first_seen, row.last_seen)
                     for row in conn.execute(sa.select(t.edges))}
            samples = {(keys[row.edge_id], row.slot): tuple(row)[2:] for row in conn.execute(sa.select(t.edge_samples))}
            identities = {row.key for row in conn.execute(sa.select(i.key))}
    finally:
        store.close()
    return {"edges": edges, "samples": samples, "identities": identities}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("issue15")
    shape = dataclasses.replace(gen_cluster.PRESETS["issue15"], external_ips=400)
    gen_cluster.generate(out, namespaces=6, pods=240, nodes=3, flows=12_000, shape=shape)
    lines = (out / "flows.jsonl").read_bytes().splitlines(keepends=True)
    (out / "flows.jsonl").write_bytes(b"".join(_respelt(line, n) for n, line in enumerate(lines)))
    return out


def test_grouped_import_stores_what_per_flow_attribution_stores(generated: Path, tmp_path: Path) -> None:
    cluster = load_cluster([str(generated / "cluster.yaml")], require_pods=True)
    grouped_url, simple_url = f"sqlite:///{tmp_path / 'grouped.db'}", f"sqlite:///{tmp_path / 'simple.db'}"
    store = open_store(grouped_url)
    try:
        report = import_sources(store, cluster, [Source(str(generated / "flows.jsonl"), "flows")])
    finally:
        store.close()
    with (generated / "flows.jsonl").open("rb") as stream:
        flows = list(iter_flows(stream, "flows.jsonl"))
    simple = per_flow_batch(cluster, flows)
    store = open_store(simple_url)
    try:
        with store.transaction() as conn:
            write_cluster(conn, cluster)
            write_batch(conn, simple)
    finally:
        store.close()
    grouped_rows, simple_rows = _stored(grouped_url), _stored(simple_url)
    assert report.flows == len(flows) and report.duplicates > 0  # the doubled lines were recognised
    assert report.edges_new == len(simple.edges) > 100
    assert sum(totals.first_seen is None for totals in simple.edges.values()) < len(simple.edges)
    assert grouped_rows == simple_rows
