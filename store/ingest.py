"""The one ingest path: flows and DNS answers in, attributed and aggregated batches out.

``netpol-gen import`` feeds it files and writes one batch in one transaction; the live collector
feeds it as traffic arrives and writes a batch (:meth:`Ingest.take_batch` then
:func:`netpol_gen.store.writer.write_batch`) every few seconds. Both get the same attribution,
deduplication and aggregation.

DNS names are attached to an external destination when an answer for its address was seen in the
same session and was valid (from a second before the answer to TTL plus :data:`DNS_GRACE` after it,
as resolvers and clients cache beyond the TTL) at some point between the first and last flow to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from netpol_gen.evaluator.cluster import Cluster
from netpol_gen.evaluator.flows import Flow
from netpol_gen.store.aggregate import Batch, Deduper, DnsSeen, EdgeTotals, Sample
from netpol_gen.store.attribute import Attributor
from netpol_gen.store.identity import Identity, IdentityKind

SAMPLES_PER_EDGE = 8
DNS_GRACE = 600.0


class DnsRecord(Protocol):
    """A DNS answer as the capture reader produces it (``collector.dns.DnsAnswer``)."""

    @property
    def ts(self) -> float: ...
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def ttl(self) -> int: ...


@dataclass
class IngestStats:
    flows: int = 0
    duplicates: int = 0
    service_unresolved: int = 0  # to a Service address with no such port or no backend then
    unknown_ips: set[str] = field(default_factory=set)
    dns_answers: int = 0


@dataclass(slots=True)
class _Window:
    """First and last flow time towards an external address; ``untimed`` if a flow had no time."""

    first: float | None = None
    last: float | None = None
    untimed: bool = False


class Ingest:
    """Attributes, deduplicates and aggregates flows for one cluster view until the batch is taken."""

    def __init__(
        self, cluster: Cluster, *, dedupe_window: float = 1.0, samples_per_edge: int = SAMPLES_PER_EDGE
    ) -> None:
        self._attributor = Attributor(cluster)
        self._deduper = Deduper(dedupe_window)
        self._samples = samples_per_edge
        self._dns: dict[str, dict[str, list[tuple[float, float]]]] = {}  # address -> name -> windows
        self._batch = Batch()
        self._external: dict[Identity, _Window] = {}
        self.stats = IngestStats()

    def add_flows(self, flows: Iterable[Flow]) -> None:
        for flow in flows:
            self.add_flow(flow)

    def add_flow(self, flow: Flow) -> None:
        stats = self.stats
        stats.flows += 1
        if self._deduper.is_duplicate(flow):
            stats.duplicates += 1
            return
        destination = self._attributor.destination(flow)
        if not destination.targets:
            stats.service_unresolved += 1
            return
        src = self._attributor.source(flow)
        edges = self._batch.edges
        for target in destination.targets:
            dst = target.end.identity
            key = (src.identity, dst, target.port, flow.protocol)
            totals = edges.get(key)
            if totals is None:
                totals = edges[key] = EdgeTotals()
                self._note_address(dst, flow.ts)
            elif dst.kind is IdentityKind.EXTERNAL:
                self._note_address(dst, flow.ts)
            totals.add(flow)
            if len(totals.samples) < self._samples:
                totals.samples.append(
                    Sample(flow.ts, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, src.pod_uid,
                           target.end.pod_uid, destination.service, flow.packets, flow.bytes)
                )
        if src.identity.kind is IdentityKind.UNKNOWN and src.identity.ip is not None:
            stats.unknown_ips.add(src.identity.ip)

    def _note_address(self, dst: Identity, ts: float | None) -> None:
        if dst.kind is IdentityKind.UNKNOWN and dst.ip is not None:
            self.stats.unknown_ips.add(dst.ip)
        if dst.kind is not IdentityKind.EXTERNAL:
            return
        window = self._external.setdefault(dst, _Window())
        if ts is None:
            window.untimed = True
            return
        window.first = ts if window.first is None else min(window.first, ts)
        window.last = ts if window.last is None else max(window.last, ts)

    def add_dns(self, answer: DnsRecord) -> None:
        self.stats.dns_answers += 1
        key = (answer.name, answer.address)
        seen = self._batch.dns.get(key)
        self._batch.dns[key] = DnsSeen(
            answer.ttl,
            answer.ts if seen is None else min(seen.first_seen, answer.ts),
            answer.ts if seen is None else max(seen.last_seen, answer.ts),
        )
        windows = self._dns.setdefault(answer.address, {}).setdefault(answer.name, [])
        start, end = answer.ts - 1.0, answer.ts + answer.ttl + DNS_GRACE
        if windows and start <= windows[-1][1]:
            windows[-1] = (min(windows[-1][0], start), max(windows[-1][1], end))
        else:
            windows.append((start, end))

    def take_batch(self) -> Batch:
        """The batch so far, with DNS names attached to its external destinations; starts a new one."""
        batch = self._batch
        for identity, window in self._external.items():
            names = {
                name
                for name, windows in self._dns.get(identity.ip or "", {}).items()
                if window.untimed or any(
                    start <= (window.last or 0.0) and (window.first or 0.0) <= end for start, end in windows
                )
            }
            if names:
                batch.names[identity] = names
        self._batch, self._external = Batch(), {}
        return batch
