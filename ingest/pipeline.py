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

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from netpol_gen.errors import FlowError
from netpol_gen.ingest.attribute import Attributor, Destination, End
from netpol_gen.model.aggregate import SOURCE_CAPTURE, Batch, Counters, DnsSeen, EdgeKey, EdgeTotals, Sample
from netpol_gen.model.bounds import horizon
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.flows import Flow, RecordBlock, canonical_addresses, too_late
from netpol_gen.model.identity import Identity, IdentityKind

SAMPLES_PER_EDGE = 8
DNS_GRACE = 600.0


class _FlowFields(Protocol):
    """What the per-flow loop reads of a flow: a :class:`Flow` or a decoded :class:`FlowRecord`."""

    @property
    def src_ip(self) -> str: ...
    @property
    def dst_ip(self) -> str: ...
    @property
    def dst_port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def src_port(self) -> int | None: ...
    @property
    def ts(self) -> float | None: ...
    @property
    def packets(self) -> int | None: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def answered(self) -> bool: ...


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


_UNBOUNDED = float("inf")
_UNTIMED = -1  # the stretch of flows without a timestamp (attributed against the live pods)
_UNTIMED_STRETCHES = (-1, -1)  # their stretch of the source's and the destination's change times


@dataclass(slots=True, eq=False)
class _Group:
    """The flows of one connection within one stretch of time in which the cluster gives one answer for
    both its addresses: attributed once, when its first flow arrives; each later flow only counts."""

    source: End
    destination: Destination
    totals: tuple[EdgeTotals, ...]  # per target of ``destination``, the edge the group adds to
    counters: Counters = field(default_factory=Counters)
    established: dict[str, int] = field(default_factory=dict)  # connections not captured, by source
    sampling: bool = True  # whether an edge of the group may still take samples


@dataclass(slots=True, eq=False)
class _Connection:
    """Flows of one (source address, destination address, destination port, protocol), canonical, with
    the instants at which either address may change meaning (:meth:`Cluster.change_times`) and its
    groups by stretch between them; ``current`` is the group of ``[low, high)``, the stretch of the
    last timed flow (flows of a connection mostly arrive in time order, so this is the usual hit).
    ``started`` holds the start buckets of the flows kept, by source port: one bucket, or the set of
    them once a port is reused (a port is mostly used once per connection)."""

    src_ip: str
    dst_ip: str
    dst_port: int
    protocol: str
    src_times: list[float]
    dst_times: list[float]
    groups: dict[int, _Group] = field(default_factory=dict)
    started: dict[int, int | set[int]] = field(default_factory=dict)
    current: _Group | None = None
    low: float = _UNBOUNDED
    high: float = -_UNBOUNDED


class Ingest:
    """Deduplicates, aggregates and attributes flows for one cluster view until the batch is taken.

    Flows are aggregated before they are attributed: per flow, one dictionary lookup finds its
    connection, the stretch of the cluster view its timestamp falls in picks the group (usually the
    one the previous flow of that connection used), and the group's counters grow. Attribution
    (which identities, which Service backends) happens once per group; folding groups into workload
    edges once per batch. An edge's samples are the first ``samples_per_edge`` flows attributed to
    it, in the order they were added.

    The same connection captured on both nodes (or on two interfaces of one node) is one connection:
    same 5-tuple, start within about ``dedupe_window`` seconds. Start times are bucketed by the window
    and the neighbouring buckets checked, so two sightings up to one window apart always match (and
    up to two windows apart may). A flow without a source port or a timestamp cannot be told apart
    from a new connection to the same port and is never dropped. Memory is one entry per connection and
    source port (and one per start bucket of a port reused), for the life of the Ingest: import all
    captures of the same period in one run so that both sightings meet. The buckets are looked up per
    connection, not in one set of every flow (issue #15: that set's three lookups per flow, each a cache
    miss in a table of a million, were a quarter of the per-flow loop).
    """

    def __init__(
        self, cluster: Cluster, *, dedupe_window: float = 1.0, samples_per_edge: int = SAMPLES_PER_EDGE
    ) -> None:
        self._cluster = cluster
        self._attributor = Attributor(cluster)
        self._window = dedupe_window
        self._samples = samples_per_edge
        self._dns: dict[str, dict[str, list[tuple[float, float]]]] = {}  # address -> name -> windows
        self._dns_batch: dict[tuple[str, str], DnsSeen] = {}
        self._connections: dict[tuple[str, str, int, str], _Connection] = {}  # by the 4-tuple as spelt
        self._canonical: dict[tuple[str, str, int, str], _Connection] = {}
        self._edges: dict[EdgeKey, EdgeTotals] = {}
        self.stats = IngestStats()

    def add_flow(self, flow: Flow, source: str = SOURCE_CAPTURE) -> None:
        """One connection; ``source`` says how it was learnt (captured, or read from a table of open
        connections: ``conntrack``, ``sockets``), kept per edge as its provenance."""
        self._add((flow,), _unnumbered, source)

    def add_flows(self, flows: Iterable[Flow]) -> None:
        for flow in flows:
            self.add_flow(flow)

    def add_records(self, blocks: Iterable[RecordBlock], name: str) -> None:
        """Flow records as :func:`netpol_gen.model.flows.iter_record_blocks` decodes them, with what the
        schema cannot say checked as :func:`netpol_gen.model.flows.flow_from_record` checks it (once per
        connection for the addresses); FlowError names ``name`` and the line. No Flow is built per line."""
        for block in blocks:
            self._add(block.records, partial(_line_in, name, block), SOURCE_CAPTURE)

    def _add(self, records: Iterable[_FlowFields], where: Callable[[int], str], source: str) -> None:
        """The per-flow loop, the one hot path of ingest: find the connection, drop a duplicate, find the
        group (usually the connection's current one), count, keep a sample while an edge wants one.
        A FlowError says ``where(i)`` the ``i``-th of ``records`` is."""
        latest = horizon()
        connections, window = self._connections, self._window
        stats = self.stats
        flows = duplicates = 0
        try:
            for record in records:
                key = (record.src_ip, record.dst_ip, record.dst_port, record.protocol)
                ts, src_port = record.ts, record.src_port
                try:
                    connection = connections.get(key) or self._connection(key)
                    if ts is not None and ts > latest:
                        raise too_late(ts)
                except FlowError as exc:  # every record before this one was counted in ``flows``
                    raise FlowError(exc.what, where=where(flows)) from None
                flows += 1
                if ts is None:
                    group = connection.groups.get(_UNTIMED) or self._attribute(connection, _UNTIMED, _UNTIMED_STRETCHES,
                                                                               src_port, ts)
                else:
                    if src_port is not None:
                        bucket = int(ts // window)
                        kept = connection.started.get(src_port)
                        if kept is None:
                            connection.started[src_port] = bucket
                        elif _repeated(connection.started, src_port, kept, bucket):
                            duplicates += 1
                            continue
                    current = connection.current
                    group = current if current is not None and connection.low <= ts < connection.high else \
                        self._stretch(connection, src_port, ts)
                group.counters.count(ts, record.packets, record.bytes, record.answered)
                if source != SOURCE_CAPTURE:
                    group.established[source] = group.established.get(source, 0) + 1
                if group.sampling:
                    self._sample(connection, group, src_port, ts, record.packets, record.bytes)
        finally:
            stats.flows += flows
            stats.duplicates += duplicates

    def _connection(self, key: tuple[str, str, int, str]) -> _Connection:
        """The connection ``key`` (addresses as spelt in the input) stands for; FlowError if its
        addresses are no addresses of one family."""
        src_ip, dst_ip = canonical_addresses(key[0], key[1])
        canonical = (src_ip, dst_ip, key[2], key[3].upper())
        connection = self._canonical.get(canonical)
        if connection is None:
            change_times = self._cluster.change_times
            connection = self._canonical[canonical] = _Connection(*canonical, change_times(src_ip),
                                                                  change_times(dst_ip))
        self._connections[key] = connection
        return connection

    def _stretch(self, connection: _Connection, src_port: int | None, ts: float) -> _Group:
        """The group of the stretch ``ts`` falls in (made and attributed if new), now ``current``."""
        src_times, dst_times = connection.src_times, connection.dst_times
        i, j = bisect_right(src_times, ts), bisect_right(dst_times, ts)
        slot = i * (len(dst_times) + 1) + j
        group = connection.groups.get(slot) or self._attribute(connection, slot, (i, j), src_port, ts)
        connection.current = group
        connection.low = max(src_times[i - 1] if i else -_UNBOUNDED, dst_times[j - 1] if j else -_UNBOUNDED)
        connection.high = min(src_times[i] if i < len(src_times) else _UNBOUNDED,
                              dst_times[j] if j < len(dst_times) else _UNBOUNDED)
        return group

    def _attribute(self, connection: _Connection, slot: int, stretches: tuple[int, int], src_port: int | None,
                   ts: float | None) -> _Group:
        """A new group, attributed as its first flow is (every flow of the stretch gets the same answer):
        ``stretches`` are those of its source's and destination's change times (-1: no time)."""
        attributor = self._attributor
        destination = attributor.destination_in(connection.dst_ip, connection.dst_port, connection.protocol,
                                                stretches[1], ts)
        source = attributor.end_in(connection.src_ip, stretches[0], ts)
        totals = []
        for target in destination.targets:
            key = (source.identity, target.end.identity, target.port, connection.protocol)
            edge = self._edges.get(key)
            if edge is None:
                edge = self._edges[key] = EdgeTotals()
            totals.append(edge)
        group = connection.groups[slot] = _Group(source, destination, tuple(totals))
        return group

    def _sample(self, connection: _Connection, group: _Group, src_port: int | None, ts: float | None,
                packets: int | None, bytes_: int | None) -> None:
        """The flow as evidence on each of the group's edges that has fewer than the samples it keeps."""
        room = False
        for target, edge in zip(group.destination.targets, group.totals, strict=True):
            if len(edge.samples) < self._samples:
                edge.samples.append(Sample(ts, connection.src_ip, src_port, connection.dst_ip, connection.dst_port,
                                           group.source.pod_uid, target.end.pod_uid, group.destination.service,
                                           packets, bytes_))
                room = room or len(edge.samples) < self._samples
        group.sampling = room

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
        batch = Batch(edges=self._edges, dns=self._dns_batch)
        windows: dict[Identity, Counters] = {}  # when each external destination was reached
        for connection in self._canonical.values():
            groups, connection.groups, connection.current = connection.groups, {}, None
            for group in groups.values():
                if not group.totals:
                    self.stats.service_unresolved += group.counters.connections
                for target, totals in zip(group.destination.targets, group.totals, strict=True):
                    totals.merge(group.counters)
                    for source, count in group.established.items():
                        totals.established[source] = totals.established.get(source, 0) + count
                    dst = target.end.identity
                    if dst.kind is IdentityKind.EXTERNAL:
                        windows.setdefault(dst, Counters()).merge(group.counters)
        for src_identity, dst, _, _ in batch.edges:
            self.stats.unknown_ips.update(i.ip for i in (src_identity, dst) if i.kind is IdentityKind.UNKNOWN and i.ip)
        for identity, reached in windows.items():
            names = {name for name, valid in self._dns.get(identity.ip or "", {}).items()
                     if _overlaps(reached, valid)}
            if names:
                batch.names[identity] = names
        self._edges, self._dns_batch = {}, {}
        return batch


def _repeated(started: dict[int, int | set[int]], port: int, kept: int | set[int], bucket: int) -> bool:
    """Whether a flow from ``port`` starting in ``bucket`` is one already kept (``kept``: the buckets of
    those from that port) started within a bucket of it; if not, ``bucket`` is kept too."""
    if isinstance(kept, int):
        if abs(kept - bucket) <= 1:
            return True
        started[port] = {kept, bucket}
        return False
    if bucket in kept or bucket - 1 in kept or bucket + 1 in kept:
        return True
    kept.add(bucket)
    return False


def _line_in(name: str, block: RecordBlock, index: int) -> str:
    """Where the ``index``-th record of ``block`` of file ``name`` is."""
    return f"{name}:line {block.line(index)}"


def _unnumbered(_index: int) -> str:
    """Where a flow handed over alone (:meth:`Ingest.add_flow`) is: no file, no line."""
    return ":line 0"


def _overlaps(reached: Counters, valid: list[tuple[float, float]]) -> bool:
    """Whether flows reached the address while one of the answers for a name was valid."""
    if reached.untimed:
        return True
    first, last = reached.first_seen or 0.0, reached.last_seen or 0.0
    return any(start <= last and first <= end for start, end in valid)
