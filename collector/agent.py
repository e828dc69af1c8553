"""The live collector: a capture loop that never waits for anyone, and a delivery thread behind it.

The capture thread (the caller's) drains every tap each poll period, feeds frames to the tracker and, every interval,
cuts what was seen into an :class:`Interval` and queues it. The delivery thread hands each interval
to the sinks (the store through Ingest, a JSONL file); a slow or unreachable store therefore only
grows the queue and the spool, never the kernel's drop counters. Frames for a pcap file are written
by the capture thread itself, in capture order.

On stop (SIGTERM/SIGINT set the event) the sockets are drained once more, the last interval is cut
and every queued interval delivered before :meth:`Agent.run` returns; a crash loses the interval in
progress and whatever was queued behind a slow store.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from netpol_gen.collector.capture import RCVBUF, Capture, CaptureSetupError, bpf_filter, compile_bpf
from netpol_gen.collector.capture_track import FrameTracker
from netpol_gen.collector.established import EstablishedScanner, PodScope
from netpol_gen.collector.interfaces import pod_interfaces
from netpol_gen.collector.kube import ClusterSource
from netpol_gen.collector.metrics import Health, Metrics
from netpol_gen.ingest.decode import Address
from netpol_gen.ingest.dns import DnsAnswer
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.flows import Flow

log = logging.getLogger("netpol_gen.collect")


@dataclass(frozen=True)
class Interval:
    """What one interval saw; ``batch_id`` makes its delivery to the store idempotent."""

    batch_id: str
    start: float
    end: float
    flows: list[Flow]
    dns: list[DnsAnswer]
    established: dict[str, list[Flow]] = field(default_factory=dict)  # by source: open connections a scan found


class Sink(Protocol):
    """Where intervals go; called on the delivery thread only."""

    def deliver(self, interval: Interval) -> None: ...
    def close(self) -> None: ...


class FrameSink(Protocol):
    """Raw frames as captured (a pcap file); called on the capture thread."""

    def frame(self, ts: float, frame: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class AgentConfig:
    interval: float = 10.0
    interfaces: tuple[str, ...] = ()  # empty: every pod interface, re-detected
    rediscover_every: float = 2.0
    poll_period: float = 0.01
    max_tracked: int = 1_000_000
    rcvbuf: int = RCVBUF
    established_sources: tuple[str, ...] = ()  # conntrack, sockets: scanned at start and every interval
    established_interval: float = 300.0
    node_name: str | None = None  # this node, to report a connection on its initiator's node only


def pod_addresses(cluster: Cluster) -> frozenset[Address]:
    """Every pod (not host-network) address the cluster knows, in the decoder's form."""
    found: set[Address] = set()
    for pod in cluster.pods:
        if pod.host_network:
            continue
        for ip in pod.ips:
            address = ipaddress.ip_address(ip)
            found.add(int(address) if address.version == 4 else address.packed)
    return frozenset(found)


@dataclass
class Agent:
    config: AgentConfig
    source: ClusterSource | None
    sinks: Sequence[Sink]
    metrics: Metrics
    health: Health
    frame_sinks: Sequence[FrameSink] = ()
    clock: Callable[[], float] = time.time
    _queue: queue.Queue[Interval | None] = field(default_factory=queue.Queue)
    _scanner: EstablishedScanner | None = None

    def run(self, stop: threading.Event) -> None:
        """Capture until ``stop`` is set, then deliver everything; returns when all is delivered."""
        delivery = threading.Thread(target=self._deliver_all, name="delivery")
        delivery.start()
        capture = Capture(compile_bpf(), self.config.rcvbuf)
        tracker = FrameTracker(self.config.max_tracked)
        scanning: threading.Thread | None = None
        if self.config.established_sources:
            self._scanner = EstablishedScanner(self.config.established_sources)
            scanning = threading.Thread(target=self._scan_established, args=(stop, self._scanner), name="established")
            scanning.start()
        try:
            self._capture(stop, capture, tracker)
        finally:
            capture.close()
            for sink in self.frame_sinks:
                sink.close()
            if scanning is not None:
                scanning.join()
            if self._scanner is not None:
                self._queue_established(self._scanner.release())
            self._queue.put(None)
            delivery.join()

    def _scan_established(self, stop: threading.Event, scanner: EstablishedScanner) -> None:
        """At start and every ``established_interval``: hold the open connections capture did not learn (the
        capture thread queues them at its cuts).

        On its own thread: a dump of a large conntrack table takes seconds, which the capture loop
        must not wait for.
        """
        scope_of: tuple[Cluster | None, PodScope | None] = (None, None)
        while True:
            cluster = self.source.current() if self.source is not None else None
            if cluster is not scope_of[0]:
                scope_of = (cluster, None if cluster is None else PodScope.of(cluster, self.config.node_name))
            now = self.clock()
            found = scanner.scan(now, scope_of[1])
            log.info("open connections scanned", extra={"fields": {"sources": list(scanner.sources), **found}})
            if stop.wait(self.config.established_interval):
                return

    def _capture(self, stop: threading.Event, capture: Capture, tracker: FrameTracker) -> None:
        config, clock = self.config, self.clock
        cluster = self._refresh(capture, tracker, None)
        self._set_interfaces(capture)
        frame_sinks = self.frame_sinks
        track = tracker.frame

        def handle(ts: float, iface: str, outgoing: bool, frame: bytes) -> None:
            track(ts, outgoing, frame)
            for sink in frame_sinks:
                sink.frame(ts, frame)

        start = clock()
        next_cut, next_scan = start + config.interval, start + config.rediscover_every
        while True:
            stopping = stop.is_set()
            capture.poll(0, handle, clock)
            self.health.beat = time.monotonic()
            now = clock()
            if now >= next_scan:
                if not config.interfaces:
                    self._set_interfaces(capture)
                next_scan = now + config.rediscover_every
            if now >= next_cut or stopping:
                self._cut(capture, tracker, start, now, final=stopping)
                cluster = self._refresh(capture, tracker, cluster)
                start, next_cut = now, now + config.interval
            if stopping:
                return
            # Drain every poll period rather than wake per frame: at low rates one wake per frame cost
            # more than the frames; the socket buffers hold far more than a period's frames.
            stop.wait(min(config.poll_period, max(next_cut - clock(), 0.0)))

    def _refresh(self, capture: Capture, tracker: FrameTracker, cluster: Cluster | None) -> Cluster | None:
        """Take the source's current cluster; rebuild the pod address set and the kernel filter when it changed."""
        if self.source is None:
            return None
        current = self.source.current()
        if current is not cluster:
            tracker.pod_addresses = pod_addresses(current)
            cidrs = sorted({cidr for node in current.nodes for cidr in node.pod_cidrs})
            if cluster is None or cidrs != sorted({c for node in cluster.nodes for c in node.pod_cidrs}):
                capture.set_program(compile_bpf(bpf_filter(cidrs)))
        restarts = getattr(self.source, "watch_restarts", None)
        if isinstance(restarts, int):
            self.metrics.watch_restarts.set(restarts)
        return current

    def _set_interfaces(self, capture: Capture) -> None:
        before = set(capture.interfaces)
        wanted = self.config.interfaces or pod_interfaces()
        capture.set_interfaces(wanted, _warn_setup)
        after = set(capture.interfaces)
        if after != before:
            log.info("interfaces changed", extra={"fields": {
                "added": sorted(after - before), "removed": sorted(before - after), "interfaces": sorted(after)}})
        self.metrics.interfaces.set(len(after))
        self.health.ready = bool(after)

    def _cut(self, capture: Capture, tracker: FrameTracker, start: float, end: float, *, final: bool) -> None:
        """Queue the interval ``start``..``end``; connections whose SYN is not answered yet wait for the
        next cut (:meth:`FrameTracker.take`), unless this one is the ``final`` cut."""
        before = tracker.stats.packets_filtered_in, tracker.other_end, tracker.stats.dns_answers
        handshakes = tracker.syn_retransmits, tracker.unanswered
        self.metrics.tracked.set(tracker.tracked())
        flows, dns = tracker.take(None if final else end)
        if self._scanner is not None:
            self._queue_established(self._scanner.captured(flows))
        stats, metrics = tracker.stats, self.metrics
        drops = capture.drops()
        metrics.packets.inc(stats.packets_filtered_in - before[0])
        metrics.other_end.inc(tracker.other_end - before[1])
        metrics.dns_answers.inc(stats.dns_answers - before[2])
        metrics.flows.inc(len(flows))
        metrics.syn_retransmits.inc(tracker.syn_retransmits - handshakes[0])
        metrics.unanswered.inc(tracker.unanswered - handshakes[1])
        metrics.kernel_drops.inc(drops.drops)
        for sink in self.frame_sinks:
            sink.flush()
        if drops.drops:
            log.warning("kernel dropped frames: the socket buffer overflowed", extra={"fields": {
                "drops": drops.drops, "by_interface": drops.by_iface}})
        self._queue.put(Interval(uuid.uuid4().hex, start, end, flows, dns))
        metrics.backlog.set(self._queue.qsize())
        log.info("interval", extra={"fields": {
            "flows": len(flows), "dns_answers": len(dns), "packets_total": stats.packets_filtered_in,
            "flows_total": stats.flows, "kernel_drops": drops.drops, "interfaces": len(capture.interfaces),
            "unanswered_total": tracker.unanswered, "syn_retransmits_total": tracker.syn_retransmits}})

    def _queue_established(self, due: list[tuple[float, dict[str, list[Flow]]]]) -> None:
        """Each scan's findings that capture did not learn, as an interval of its own at the scan's time."""
        for scanned_at, found in due:
            for source, flows in found.items():
                self.metrics.established.labels(source).inc(len(flows))
            self._queue.put(Interval(uuid.uuid4().hex, scanned_at, scanned_at, [], [], found))

    def _deliver_all(self) -> None:
        while True:
            interval = self._queue.get()
            if interval is None:
                break
            for sink in self.sinks:
                try:
                    sink.deliver(interval)
                except Exception:  # one sink's bug must not stop the others or the capture
                    log.exception("sink failed", extra={"fields": {"sink": type(sink).__name__}})
            self.metrics.backlog.set(self._queue.qsize())
        for sink in self.sinks:
            sink.close()
        log.info("delivered everything")


def _warn_setup(error: CaptureSetupError) -> None:
    log.warning("cannot capture on an interface", extra={"fields": {"error": error.message}})
