"""Where the collector's intervals go: the store or a store server (through Ingest, spooled when
unreachable), JSONL, pcap."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import IO, Protocol

from scapy.utils import RawPcapWriter

from netpol_gen.collector.agent import FrameSink, Interval, Sink
from netpol_gen.collector.capture_targets import DeliveryError
from netpol_gen.collector.kube import ClusterSource
from netpol_gen.collector.metrics import Metrics
from netpol_gen.collector.spool import Spool
from netpol_gen.errors import InputError
from netpol_gen.ingest.decode import LINKTYPE_ETHERNET
from netpol_gen.ingest.dns import DnsAnswer
from netpol_gen.ingest.pipeline import DNS_GRACE, Ingest
from netpol_gen.model.aggregate import SOURCE_CAPTURE, Batch
from netpol_gen.model.cluster import Cluster

log = logging.getLogger("netpol_gen.collect")

# Flows one Ingest sees before a new one takes over: its deduplicator keeps a hash per flow (~70 bytes).
INGEST_FLOWS = 500_000
# After a failed delivery, intervals go straight to the spool for this long (doubling, up to the cap)
# before the target is tried again: a delivery attempt can take the target's whole retry deadline, and
# trying every interval while the store is away would queue intervals in memory behind the attempts.
HOLD_FIRST, HOLD_MAX = 5.0, 60.0


class BatchTarget(Protocol):
    """Writes one batch, idempotently by id; raises DeliveryError when it could not."""

    url: str

    def write(self, batch_id: str, batch: Batch, flows: int, cluster: Cluster | None) -> bool: ...
    def close(self) -> None: ...


class StoreSink:
    """Attributes each interval with the source's current cluster and writes one batch per interval.

    One Ingest lives as long as the cluster view it attributes against (and at most
    :data:`INGEST_FLOWS` flows), so duplicate sightings across intervals are dropped; a new cluster
    view (the live source's, after a change) starts a new one, given the DNS answers still valid.
    The cluster view is written with the first batch after it changed. Any delivery failure spools
    the batch and holds further attempts back (:data:`HOLD_FIRST`, doubling to :data:`HOLD_MAX`);
    spooled batches go first, in order, once the target answers again.
    """

    def __init__(self, target: BatchTarget, source: ClusterSource, spool: Spool, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._target, self._source, self._spool, self._metrics = target, source, spool, metrics
        self._clock = clock
        self._hold = 0.0  # the current hold after failures; 0 when the last attempt succeeded
        self._hold_until = 0.0
        self._cluster: Cluster | None = None
        self._ingest: Ingest | None = None
        self._ingest_cluster: Cluster | None = None  # the view the Ingest attributes against
        self._recent_dns: dict[tuple[str, str], DnsAnswer] = {}  # (name, address): the latest answer
        self._cluster_written = False
        self._gauge_spool()

    def deliver(self, interval: Interval) -> None:
        cluster = self._source.current()
        if cluster is not self._cluster:
            self._cluster, self._cluster_written = cluster, False
        ingest = self._current_ingest(cluster, interval.end)
        for flow in interval.flows:
            ingest.add_flow(flow)
        for source, flows in interval.established.items():
            for flow in flows:
                ingest.add_flow(flow, source)
        for answer in interval.dns:
            ingest.add_dns(answer)
            self._recent_dns[(answer.name, answer.address)] = answer
        batch = ingest.take_batch()
        self._count_sources(batch)
        if self._holding() or not self._drain() or (not batch.edges and not batch.dns and self._cluster_written):
            if batch.edges or batch.dns:
                self._park(interval.batch_id, len(interval.flows), batch)
            return
        try:
            self._write(interval.batch_id, len(interval.flows), batch)
        except DeliveryError as exc:
            if exc.rejected:
                self._reject(interval.batch_id, len(interval.flows), batch, exc)
            else:
                self._failed(exc)
                self._park(interval.batch_id, len(interval.flows), batch)
            return
        log.info("batch written", extra={"fields": {"batch": interval.batch_id, "flows": len(interval.flows),
                                                    "edges": len(batch.edges), "dns": len(batch.dns)}})

    def _count_sources(self, batch: Batch) -> None:
        learnt = self._metrics.learnt_edges
        for totals in batch.edges.values():
            if totals.connections > sum(totals.established.values()):
                learnt.labels(SOURCE_CAPTURE).inc()
            for source in totals.established:
                learnt.labels(source).inc()

    def _current_ingest(self, cluster: Cluster, now: float) -> Ingest:
        """The Ingest for ``cluster``; a new one when the cluster changed or this one saw
        :data:`INGEST_FLOWS` flows (its deduplicator remembers every flow), primed with the DNS answers
        still valid so that names keep attaching to the connections that follow them."""
        ingest = self._ingest
        if ingest is not None and self._ingest_cluster is cluster and ingest.stats.flows < INGEST_FLOWS:
            return ingest
        ingest = self._ingest = Ingest(cluster)
        self._ingest_cluster = cluster
        self._recent_dns = {key: answer for key, answer in self._recent_dns.items()
                            if answer.ts + answer.ttl + DNS_GRACE >= now}
        for answer in self._recent_dns.values():
            ingest.add_dns(answer)
        return ingest

    def close(self) -> None:
        if self._spool.count():
            log.warning("batches left in the spool", extra={"fields": {
                "batches": self._spool.count(), "bytes": self._spool.size()}})
        self._spool.close()
        self._target.close()

    def _write(self, batch_id: str, flows: int, batch: Batch) -> None:
        self._target.write(batch_id, batch, flows, None if self._cluster_written else self._cluster)
        self._cluster_written = True
        self._hold = 0.0
        self._metrics.batches_written.inc()

    def _holding(self) -> bool:
        """Whether a recent failure still holds delivery attempts back."""
        return self._clock() < self._hold_until

    def _drain(self) -> bool:
        """Deliver spooled batches, oldest first; False when the target failed (the rest stays spooled)."""
        if not self._spool.count():
            return True
        for spooled in self._spool.oldest():
            try:
                self._write(spooled.batch_id, spooled.flows, spooled.batch)
            except DeliveryError as exc:
                if not exc.rejected:
                    self._failed(exc)
                    return False
                self._reject(spooled.batch_id, spooled.flows, spooled.batch, exc)  # the rest goes on
                continue
            self._spool.remove(spooled.batch_id)
            self._gauge_spool()
        log.info("spool delivered", extra={"fields": {"url": self._target.url}})
        return True

    def _park(self, batch_id: str, flows: int, batch: Batch) -> None:
        dropped = self._spool.dropped
        self._spool.put(batch_id, flows, batch)
        self._metrics.batches_spooled.inc()
        self._metrics.batches_dropped.inc(self._spool.dropped - dropped)
        self._gauge_spool()
        log.warning("store unreachable: batch spooled", extra={"fields": {
            "batch": batch_id, "spooled_batches": self._spool.count(), "spooled_bytes": self._spool.size(),
            "dropped_batches": self._spool.dropped}})

    def _reject(self, batch_id: str, flows: int, batch: Batch, exc: DeliveryError) -> None:
        """A batch the store will never take: set aside in the spool file, counted, said loudly, not retried."""
        self._spool.reject(batch_id, flows, batch, str(exc))
        self._metrics.batches_rejected.inc()
        self._gauge_spool()
        log.error("store rejected a batch: kept in the spool's rejected table, not retried", extra={"fields": {
            "batch": batch_id, "flows": flows, "error": str(exc), "url": self._target.url}})

    def _failed(self, exc: DeliveryError) -> None:
        self._hold = min(max(2 * self._hold, HOLD_FIRST), HOLD_MAX)
        self._hold_until = self._clock() + self._hold
        self._metrics.store_errors.inc()
        log.warning("store write failed", extra={"fields": {"url": self._target.url, "error": str(exc)}})

    def _gauge_spool(self) -> None:
        self._metrics.spool_batches.set(self._spool.count())
        self._metrics.spool_bytes.set(self._spool.size())


class JsonlSink:
    """Flows as JSONL (the format ``import --flows`` and ``check --flows`` read), flushed each interval."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def deliver(self, interval: Interval) -> None:
        self._stream.writelines(flow.to_json() + "\n" for flow in interval.flows)
        self._stream.writelines(flow.to_json() + "\n" for flows in interval.established.values() for flow in flows)
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


class PcapSink:
    """The frames that passed the kernel filter, as captured (Ethernet), for ``import --pcap``."""

    def __init__(self, path: str) -> None:
        self._writer = RawPcapWriter(path, linktype=LINKTYPE_ETHERNET, sync=False)
        self._writer.write_header(None)  # write_packet() does not; a capture without frames is still a file

    def frame(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        self._writer.write_packet(frame, sec=sec, usec=int((ts - sec) * 1_000_000))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_outputs(outputs: tuple[str, ...]) -> tuple[list[Sink], list[FrameSink]]:
    """The sinks of ``--output jsonl:FILE|pcap:FILE`` specs: flow sinks and raw-frame sinks."""
    sinks: list[Sink] = []
    frame_sinks: list[FrameSink] = []
    for output in outputs:
        kind, _, path = output.partition(":")
        if not path or kind not in ("jsonl", "pcap"):
            raise InputError(f"expected jsonl:FILE or pcap:FILE, got {output!r}", where="--output")
        try:
            if kind == "jsonl":
                # appended to: a restarted collector must not erase what its previous run recorded
                sinks.append(JsonlSink(open(path, "a", encoding="utf-8")))  # noqa: SIM115 - the sink closes it
            else:
                frame_sinks.append(PcapSink(path))
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", where=path) from None
    return sinks, frame_sinks
