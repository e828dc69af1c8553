"""``serve``'s ``/metrics``: read from the store at each scrape, so every replica answers alike and a
restart loses nothing (the counters are the store's sums, not the process's).

- ``netpol_gen_denied_connections_total{set,namespace,workload,direction}``: connections a shadow set
  would deny, on the side of the workload (``Kind/name``) whose policies deny them; a connection
  denied on both sides counts once for each.
- ``netpol_gen_edges_total``: distinct edges learnt; ``rate()`` of it is the new-edge rate.
  ``netpol_gen_new_edges_last_hour``: edges first seen in the last hour.
- ``netpol_gen_last_delivery_timestamp_seconds{node}``: when each collector's latest batch was written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from netpol_gen.store import schema as t
from netpol_gen.store.db import Store
from netpol_gen.store.progress import node_deliveries
from netpol_gen.store.shadow import denied_totals

HOUR = 3600.0


class StoreCollector:
    """A Prometheus collector that reads the store when scraped."""

    def __init__(self, store: Store, now: float) -> None:
        self._store, self._now = store, now

    def collect(self) -> Iterator[Metric]:
        denied = CounterMetricFamily("netpol_gen_denied_connections", "Connections a shadow set would deny.",
                                     labels=["set", "namespace", "workload", "direction"])
        edges = CounterMetricFamily("netpol_gen_edges", "Distinct edges learnt (rate() is the new-edge rate).")
        new = GaugeMetricFamily("netpol_gen_new_edges_last_hour", "Edges first seen in the last hour.")
        last = GaugeMetricFamily("netpol_gen_last_delivery_timestamp_seconds",
                                 "When the latest batch of each node's collector was written.", labels=["node"])
        e = t.edges.c
        with self._store.reading() as conn:
            for total in denied_totals(conn):
                denied.add_metric([total.set, total.namespace, total.workload, total.direction], total.connections)
            count, recent = conn.execute(sa.select(
                sa.func.count(), sa.func.count().filter(e.first_seen >= self._now - HOUR))).one()
            nodes = node_deliveries(conn, self._now)  # imports posted by import --server are no nodes
        edges.add_metric([], count)
        new.add_metric([], recent)
        for node in nodes:
            last.add_metric([node.node], node.last)
        yield from (denied, edges, new, last)


def render_metrics(store: Store) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, time.time()))
    return generate_latest(registry)
