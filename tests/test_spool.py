"""The collector's delivery: idempotent batches, and the spool that keeps them while the store is away."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.types import ASGIApp, Receive, Scope, Send

from netpol_gen.collector import capture_sinks
from netpol_gen.collector.agent import Interval
from netpol_gen.collector.capture_sinks import StoreSink
from netpol_gen.collector.capture_targets import DbTarget, ServerTarget
from netpol_gen.collector.kube import StaticClusterSource
from netpol_gen.collector.metrics import Metrics
from netpol_gen.collector.spool import Spool
from netpol_gen.ingest.dns import DnsAnswer
from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.cluster import Cluster, Namespace, Pod, Workload
from netpol_gen.model.flows import Flow
from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.client import Retry
from netpol_gen.service.server import Limits, create_app
from netpol_gen.store import schema as t
from netpol_gen.store.batches import deliver_batch
from netpol_gen.store.db import open_store
from tests.serving import TOKEN, ThreadServer


def _cluster() -> Cluster:
    pods = [Pod("shop", name, f"uid-{name}", {"app": app}, (ip,), Workload("Deployment", app))
            for name, app, ip in (("web-1", "web", "10.0.0.1"), ("api-1", "api", "10.0.0.2"))]
    return Cluster.build([Namespace("shop", {})], pods, [], [], [])


T0 = 1_790_000_000.0  # a time inside the accepted window (2000 .. now + 1 day)


def _flow(n: int) -> Flow:
    return Flow("10.0.0.1", "10.0.0.2", 8080, "TCP", 40000 + n, T0 + n)


def _metric(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(f"netpol_collect_{name}")


def _connections(url: str) -> int:
    store = open_store(url)
    try:
        with store.reading() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(t.edges.c.connections), 0))).scalar_one())
    finally:
        store.close()


def test_a_batch_delivered_twice_is_written_once(store_url: str) -> None:
    ingest = Ingest(_cluster())
    ingest.add_flows([_flow(1), _flow(2)])
    batch = ingest.take_batch()
    store = open_store(store_url)
    try:
        assert deliver_batch(store, "batch-1", batch, 2, "test", _cluster())
        assert not deliver_batch(store, "batch-1", batch, 2, "test")  # e.g. again from the spool after a crash
    finally:
        store.close()
    assert _connections(store_url) == 2


def test_spool_keeps_order_and_drops_the_oldest_when_full(tmp_path: Path) -> None:
    ingest = Ingest(_cluster())
    ingest.add_flow(_flow(1))
    batch = ingest.take_batch()
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=10_000_000)
    for n in range(3):
        spool.put(f"b{n}", 1, batch)
    one = spool.size() // 3
    assert [s.batch_id for s in spool.oldest()] == ["b0", "b1", "b2"]
    spool.max_bytes = 2 * one
    spool.put("b3", 1, batch)
    assert [s.batch_id for s in spool.oldest()] == ["b2", "b3"]
    assert spool.dropped == 2
    spool.close()
    reopened = Spool(str(tmp_path / "spool.db"), max_bytes=10_000_000)  # survives a restart
    assert [s.batch_id for s in reopened.oldest()] == ["b2", "b3"]
    reopened.close()


class Clock:
    """A monotonic clock the test moves, for the sink's hold after a failed delivery."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingTarget(DbTarget):
    """A store target that counts its delivery attempts."""

    attempts = 0

    def write(self, batch_id: str, batch: Batch, flows: int, cluster: Cluster | None) -> bool:
        self.attempts += 1
        return super().write(batch_id, batch, flows, cluster)


def test_store_away_then_back_spools_then_delivers_in_order(tmp_path: Path) -> None:
    store_dir = tmp_path / "not-yet"  # SQLite cannot create a file in a missing directory: unreachable
    url = f"sqlite:///{store_dir / 'store.db'}"
    metrics = Metrics()
    clock = Clock()
    sink = StoreSink(DbTarget(url, "test"), StaticClusterSource(_cluster()), Spool(str(tmp_path / "spool.db"), 1 << 20),
                     metrics, clock)
    sink.deliver(Interval("i1", 0, 1, [_flow(1), _flow(2)], []))
    sink.deliver(Interval("i2", 1, 2, [_flow(3)], []))
    assert _metric(metrics, "spool_batches") == 2
    assert _metric(metrics, "batches_written_total") == 0
    store_dir.mkdir()
    clock.now += capture_sinks.HOLD_FIRST
    sink.deliver(Interval("i3", 2, 3, [_flow(4)], []))
    assert _metric(metrics, "spool_batches") == 0
    assert _metric(metrics, "spool_bytes") == 0
    assert _metric(metrics, "batches_written_total") == 3
    sink.close()
    assert _connections(url) == 4
    store = open_store(url)
    try:
        with store.reading() as conn:
            order = [r[0] for r in conn.execute(sa.select(t.imports.c.content_hash).order_by(t.imports.c.id))]
            endpoints = conn.execute(sa.select(sa.func.count()).select_from(t.endpoints)).scalar_one()
    finally:
        store.close()
    assert order == ["i1", "i2", "i3"]
    assert endpoints == 2  # the cluster view went in with the first delivered batch


def test_after_a_failure_intervals_go_straight_to_the_spool_until_the_hold_ends(tmp_path: Path) -> None:
    """An attempt can last the target's whole retry deadline: trying every interval while the store is
    away would queue intervals in memory (and make SIGTERM slow); a hold, doubling, prevents that."""
    store_dir = tmp_path / "not-yet"
    url = f"sqlite:///{store_dir / 'store.db'}"
    clock, target, metrics = Clock(), CountingTarget(url, "test"), Metrics()
    sink = StoreSink(target, StaticClusterSource(_cluster()), Spool(":memory:", 1 << 20), metrics, clock)
    sink.deliver(Interval("h1", 0, 1, [_flow(1)], []))
    assert target.attempts == 1
    for n in range(2, 6):  # within the hold: spooled without an attempt
        clock.now += 1.0
        sink.deliver(Interval(f"h{n}", n, n + 1, [_flow(n)], []))
    assert target.attempts == 1 and _metric(metrics, "spool_batches") == 5
    clock.now += capture_sinks.HOLD_FIRST  # the hold is over; the store is still away: one attempt, longer hold
    sink.deliver(Interval("h6", 6, 7, [_flow(6)], []))
    assert target.attempts == 2
    clock.now += capture_sinks.HOLD_FIRST + 0.5  # not past the doubled hold
    sink.deliver(Interval("h7", 7, 8, [_flow(7)], []))
    assert target.attempts == 2
    store_dir.mkdir()
    clock.now += capture_sinks.HOLD_FIRST
    sink.deliver(Interval("h8", 8, 9, [_flow(8)], []))
    assert _metric(metrics, "spool_batches") == 0 and _metric(metrics, "batches_written_total") == 8
    sink.close()
    assert _connections(url) == 8


def test_dns_names_still_attach_after_the_ingest_is_renewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_sinks, "INGEST_FLOWS", 1)  # a new Ingest for every interval
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sink = StoreSink(DbTarget(url, "test"), StaticClusterSource(_cluster()), Spool(":memory:", 1 << 20), Metrics())
    sink.deliver(Interval("i1", 0, 1, [_flow(1)], [DnsAnswer(T0, "x.test", "192.0.2.7", 30)]))
    sink.deliver(Interval("i2", 1, 2, [Flow("10.0.0.1", "192.0.2.7", 443, "TCP", 40009, T0 + 1)], []))
    sink.close()
    store = open_store(url)
    try:
        with store.reading() as conn:
            names = [r[0] for r in conn.execute(sa.select(t.identity_names.c.name))]
    finally:
        store.close()
    assert names == ["x.test"]


def test_a_store_server_away_then_back_gets_every_batch_once(store_url: str) -> None:
    store = open_store(store_url)
    server = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    metrics = Metrics()
    target = ServerTarget(server.url, lambda: TOKEN, "test", retry=Retry(deadline=0.3, base=0.01, cap=0.05))
    clock = Clock()
    sink = StoreSink(target, StaticClusterSource(_cluster()), Spool(":memory:", 1 << 20), metrics, clock)
    try:
        sink.deliver(Interval("s1", 0, 1, [_flow(1)], []))
        server.stop()  # a restarted store pod
        sink.deliver(Interval("s2", 1, 2, [_flow(2)], []))
        sink.deliver(Interval("s3", 2, 3, [_flow(3), _flow(4)], []))
        assert _metric(metrics, "spool_batches") == 2
        server = ThreadServer(server.app, port=server.port).start()
        clock.now += capture_sinks.HOLD_MAX
        sink.deliver(Interval("s4", 3, 4, [_flow(5)], []))
        assert _metric(metrics, "spool_batches") == 0
        sink.close()
        assert _connections(store_url) == 5
    finally:
        server.stop()
        store.close()


class _PostsSeen:
    """ASGI middleware recording each POST the server receives: how many times a batch was sent."""

    def __init__(self, app: ASGIApp, seen: list[int]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.seen.append(int(dict(scope["headers"]).get(b"content-length", b"0")))
        await self.app(scope, receive, send)


def _big(batch_id: str, src_port: int) -> Interval:
    # 3000 flows to as many destination ports: as many edges, a body far over the server's limit below
    return Interval(batch_id, 0, 1, [Flow("10.0.0.1", "10.0.0.2", port, "TCP", src_port, 1000.0)
                                     for port in range(1, 3001)], [])


def test_a_batch_the_store_rejects_is_set_aside_once_and_never_blocks_the_rest(tmp_path: Path) -> None:
    """A real 4xx: a server whose body limit (4 KiB) a 3000-edge batch exceeds answers 413. The batch is
    sent once, kept with the answer in the spool file's rejected table, counted; batches spooled
    behind it while the store was away are delivered, and it is never sent again."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    posts: list[int] = []
    app = create_app(store, SharedSecret(TOKEN), limits=Limits(max_body=4096, max_decoded=1 << 20))
    app.add_middleware(_PostsSeen, seen=posts)
    server = ThreadServer(app).start()
    metrics, clock = Metrics(), Clock()
    spool_path = str(tmp_path / "spool.db")
    target = ServerTarget(server.url, lambda: TOKEN, "test", retry=Retry(deadline=0.3, base=0.01, cap=0.05))
    sink = StoreSink(target, StaticClusterSource(_cluster()), Spool(spool_path, 1 << 20), metrics, clock)
    try:
        sink.deliver(_big("big-1", 50001))  # delivered at once: rejected, not spooled
        assert _metric(metrics, "batches_rejected_total") == 1 and _metric(metrics, "spool_batches") == 0
        assert len(posts) == 1
        server.stop()  # the store away: the next batches are spooled, the second big one among them
        sink.deliver(_big("big-2", 50002))
        sink.deliver(Interval("small-1", 1, 2, [_flow(1)], []))
        assert _metric(metrics, "spool_batches") == 2
        server = ThreadServer(server.app, port=server.port).start()
        posts.clear()
        clock.now += capture_sinks.HOLD_MAX
        sink.deliver(Interval("small-2", 2, 3, [_flow(2)], []))
        clock.now += capture_sinks.HOLD_MAX
        sink.deliver(Interval("small-3", 3, 4, [_flow(3)], []))
        assert _metric(metrics, "spool_batches") == 0 and _metric(metrics, "batches_rejected_total") == 2
        assert len(posts) == 4  # big-2 once, then small-1, small-2, small-3; no retry of a 4xx
        assert _metric(metrics, "batches_written_total") == 3
        sink.close()
    finally:
        server.stop()
        store.close()
    assert _connections(url) == 3
    kept = Spool(spool_path, 1 << 20)
    try:
        assert [(batch_id, "413" in error) for batch_id, error in kept.rejected()] == [("big-1", True),
                                                                                        ("big-2", True)]
        assert kept.count() == 0
    finally:
        kept.close()
