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

from netpol_gen.ingest.attribute import Attributor, Destination, End
from netpol_gen.model.aggregate import SOURCE_CAPTURE, Batch, Counters, Deduper, DnsSeen, EdgeTotals, Sample
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.flows import Flow
from netpol_gen.model.identity import Identity, IdentityKind

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
    unknown_ips: set[str] = field(default_factory=set)  # filled in as batches are taken
    dns_answers: int = 0


@dataclass(slots=True)
class _Route:
    """Flows from one attributed source to one attributed destination: the per-flow aggregate."""

    protocol: str
    counters: Counters = field(default_factory=Counters)
    flows: list[Flow] = field(default_factory=list)  # the first few, as evidence
    established: dict[str, int] = field(default_factory=dict)  # connections not captured, by source


class Ingest:
    """Attributes, deduplicates and aggregates flows for one cluster view until the batch is taken.

    Per flow, only a dictionary keyed by the attributor's cached (source, destination) objects is
    touched; fanning out to Service backends and folding pods into workload edges happens once per
    route when the batch is taken.
    """

    def __init__(
        self, cluster: Cluster, *, dedupe_window: float = 1.0, samples_per_edge: int = SAMPLES_PER_EDGE
    ) -> None:
        self._attributor = Attributor(cluster)
        self._deduper = Deduper(dedupe_window)
        self._samples = samples_per_edge
        self._dns: dict[str, dict[str, list[tuple[float, float]]]] = {}  # address -> name -> windows
        self._dns_batch: dict[tuple[str, str], DnsSeen] = {}
        self._routes: dict[tuple[End, Destination], _Route] = {}
        self.stats = IngestStats()

    def add_flows(self, flows: Iterable[Flow]) -> None:
        for flow in flows:
            self.add_flow(flow)

    def add_flow(self, flow: Flow, source: str = SOURCE_CAPTURE) -> None:
        """One connection; ``source`` says how it was learnt (captured, or read from a table of open
        connections: ``conntrack``, ``sockets``), kept per edge as its provenance."""
        stats = self.stats
        stats.flows += 1
        if self._deduper.is_duplicate(flow):
            stats.duplicates += 1
            return
        destination = self._attributor.destination(flow)
        if not destination.targets:
            stats.service_unresolved += 1
            return
        key = (self._attributor.source(flow), destination)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = _Route(flow.protocol)
        route.counters.add(flow)
        if source != SOURCE_CAPTURE:
            route.established[source] = route.established.get(source, 0) + 1
        if len(route.flows) < self._samples:
            route.flows.append(flow)

    def add_dns(self, answer: DnsRecord) -> None:
        self.stats.dns_answers += 1
        key = (answer.name, answer.address)
        seen = self._dns_batch.get(key)
        self._dns_batch[key] = DnsSeen(
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
        """The workload-level edges so far, with DNS names on external destinations; starts a new batch."""
        batch = Batch(dns=self._dns_batch)
        windows: dict[Identity, Counters] = {}  # when each external destination was reached
        for (src, destination), route in self._routes.items():
            for target in destination.targets:
                dst = target.end.identity
                key = (src.identity, dst, target.port, route.protocol)
                totals = batch.edges.get(key)
                if totals is None:
                    totals = batch.edges[key] = EdgeTotals()
                totals.merge(route.counters)
                for source, count in route.established.items():
                    totals.established[source] = totals.established.get(source, 0) + count
                for flow in route.flows[: self._samples - len(totals.samples)]:
                    totals.samples.append(Sample(
                        flow.ts, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, src.pod_uid,
                        target.end.pod_uid, destination.service, flow.packets, flow.bytes))
                if dst.kind is IdentityKind.EXTERNAL:
                    windows.setdefault(dst, Counters()).merge(route.counters)
        for src_identity, dst, _, _ in batch.edges:
            self.stats.unknown_ips.update(i.ip for i in (src_identity, dst) if i.kind is IdentityKind.UNKNOWN and i.ip)
        for identity, reached in windows.items():
            names = {name for name, valid in self._dns.get(identity.ip or "", {}).items()
                     if _overlaps(reached, valid)}
            if names:
                batch.names[identity] = names
        self._routes, self._dns_batch = {}, {}
        return batch


def _overlaps(reached: Counters, valid: list[tuple[float, float]]) -> bool:
    """Whether flows reached the address while one of the answers for a name was valid."""
    if reached.untimed:
        return True
    first, last = reached.first_seen or 0.0, reached.last_seen or 0.0
    return any(start <= last and first <= end for start, end in valid)
