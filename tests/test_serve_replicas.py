"""Two `netpol-gen serve` processes on one real PostgreSQL, as the postgres overlay's two replicas
behind one Service: batches spread over both at once, and every batch id posted to both replicas at
the same moment (a collector whose retry the Service routed to the other replica while the first
attempt was still being written). Each id must count exactly once (one replica answers "written",
the other "had it") and the store must hold exactly the sum of what was posted.

The batches overlap on edges (every batch carries the shared web->api edge, and enough distinct
edges to take the COPY path), so the replicas' transactions contend on the same rows, as nodes
talking to the same workloads do."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.model.aggregate import Batch, EdgeTotals
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.service.client import Retry, StoreClient
from netpol_gen.service.wire import BatchMessage
from netpol_gen.store.db import open_store
from netpol_gen.store.query import list_edges
from tests.serving import TOKEN, Serve, free_port

pytestmark = [pytest.mark.postgres]

BATCHES = 40
RETRY = Retry(deadline=20.0, base=0.02, cap=0.3)
Edge = tuple[str, str, int]


def _pod(name: str) -> Identity:
    return Identity(IdentityKind.POD, "shop", "Deployment", name)


def _batch(n: int) -> tuple[Batch, Counter[Edge]]:
    """Batch ``n`` and the connections it carries per (source, destination, port)."""
    batch, carried = Batch(), Counter[Edge]()
    pairs = [("web", "api", 8080, 1 + n % 3)] + [(f"node{n % 5}", f"dst{k}", 443, 1) for k in range(40)]
    for src, dst, port, connections in pairs:
        ts = 1_790_000_000.0 + n
        batch.edges[(_pod(src), _pod(dst), port, "TCP")] = EdgeTotals(connections, connections, 100, ts, ts)
        carried[(src, dst, port)] += connections
    return batch, carried


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_replicas_count_each_batch_id_once_and_the_store_holds_what_was_posted(
        store_url: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    replicas = [Serve(store_url, f"127.0.0.1:{free_port()}", token, tmp_path / f"serve{n}.log") for n in range(2)]
    try:
        for replica in replicas:  # one after the other: the first creates the schema
            replica.start()
        batches = [_batch(n) for n in range(BATCHES)]
        # Every id goes to both replicas; the two posts of an id are submitted next to each other, so
        # with 8 concurrent clients they are in flight at once, alongside other ids on both replicas.
        order = random.Random(16)
        ids = order.sample(range(BATCHES), BATCHES)
        posts = [(n, replica) for n in ids for replica in order.sample((0, 1), 2)]
        clients = [StoreClient(replica.url, TOKEN, retry=RETRY) for replica in replicas]
        try:
            def post(job: tuple[int, int]) -> tuple[int, bool]:
                n, replica = job
                message = BatchMessage(f"batch-{n}", batches[n][0], flows=1, source=f"node{n % 5}")
                return n, clients[replica].post(message)

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(post, posts))
            deliveries = clients[0].deliveries()
        finally:
            for client in clients:
                client.close()
        written = Counter(n for n, was_new in answers if was_new)
        assert written == Counter(range(BATCHES)), "each id written by exactly one replica"
        expected = sum((carried for _, carried in batches), Counter[Edge]())
        store = open_store(store_url)
        try:
            with store.reading() as conn:
                held: dict[Edge, Any] = {(e.src.workload_name or "", e.dst.workload_name or "", e.dst_port): e
                                         for e in list_edges(conn)}
        finally:
            store.close()
        assert {edge: row.connections for edge, row in held.items()} == dict(expected)
        assert held[("web", "api", 8080)].first_seen == 1_790_000_000.0
        assert held[("web", "api", 8080)].last_seen == 1_790_000_000.0 + BATCHES - 1
        assert deliveries.batches == BATCHES
    finally:
        for replica in replicas:
            replica.stop()
