"""`status` says which collectors fall behind, and imports posted through `serve` are not nodes: stands
in for a cluster where one node's collector stopped delivering (or its spool grows) while the others
post every 10 s, and an air-gapped capture was posted with `import --server`. On SQLite and PostgreSQL."""

from __future__ import annotations

from netpol_gen.model.aggregate import Batch
from netpol_gen.service.metrics import render_metrics
from netpol_gen.store.batches import Delivery, deliver_batches
from netpol_gen.store.db import open_store
from netpol_gen.store.progress import read_deliveries, summarize

NOW = 1_800_000_000.0


def test_a_node_whose_deliveries_stopped_is_behind_and_an_import_is_no_node(store_url: str) -> None:
    store = open_store(store_url)
    try:
        for n in range(30):  # node-a posts every 10 s up to now; node-b stopped 120 s ago
            at = NOW - 290 + 10 * n
            deliver_batches(store, [Delivery(f"a{n}", Batch(), 1, "collect:node-a as collector")], now=at)
            if at <= NOW - 120:
                deliver_batches(store, [Delivery(f"b{n}", Batch(), 1, "collect:node-b as collector")], now=at)
        deliver_batches(store, [Delivery("f" * 64, Batch(), 5, "import:caps.pcap as admin")], now=NOW - 5)
        with store.reading() as conn:
            deliveries = read_deliveries(conn, NOW)
        assert [(n.node, n.interval) for n in deliveries.nodes] == [("node-a", 10.0), ("node-b", 10.0)]
        status = summarize([], deliveries, NOW, hours=1)
        assert status.nodes == 2
        assert [(lag.node, lag.age, lag.interval) for lag in status.behind] == [("node-b", 120.0, 10.0)]
        assert summarize([], deliveries, NOW - 115, hours=1).behind == []  # 5 s after its last: on time
        metrics = render_metrics(store).decode()
        assert 'netpol_gen_last_delivery_timestamp_seconds{node="node-b"}' in metrics
        assert "caps.pcap" not in metrics
    finally:
        store.close()
