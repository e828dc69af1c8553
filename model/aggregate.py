"""In-memory aggregation: the store sees one write per unique edge per batch, not one per flow."""

from __future__ import annotations

from dataclasses import dataclass, field

from netpol_gen.model.bounds import AddressText, Count, DestinationPort, EstablishedSource, Port, Seconds, Ttl
from netpol_gen.model.identity import Identity

EdgeKey = tuple[Identity, Identity, int, str]  # source, destination, port on the destination, protocol

# Where an edge's connections were learnt: captured handshakes, or a table of open connections read
# (connection tracking, sockets) for connections that were open before capture started.
SOURCE_CAPTURE = "capture"
SOURCE_CONNTRACK = "conntrack"
SOURCE_SOCKETS = "sockets"
ESTABLISHED_SOURCES = (SOURCE_CONNTRACK, SOURCE_SOCKETS)


@dataclass(frozen=True, slots=True)
class Sample:
    """One raw flow kept as evidence for an edge, with the pods it was attributed to."""

    ts: Seconds | None
    src_ip: AddressText
    src_port: Port | None
    dst_ip: AddressText
    dst_port: DestinationPort
    src_pod_uid: str | None
    dst_pod_uid: str | None
    service: str | None
    packets: Count | None
    bytes: Count | None


@dataclass(slots=True)
class Counters:
    """Connections, counters and time range of a set of flows; ``untimed`` if one had no timestamp;
    ``unanswered``: how many of the connections were attempts never answered (``Flow.answered``)."""

    connections: Count = 0
    packets: Count | None = None  # None: no flow carried counters
    bytes: Count | None = None
    first_seen: Seconds | None = None
    last_seen: Seconds | None = None
    untimed: bool = False
    unanswered: Count = 0

    def count(self, ts: float | None, packets: int | None, bytes_: int | None, answered: bool = True) -> None:
        """One connection (a flow's timestamp, counters and whether it was answered: the fields, not a
        Flow, as the flow-file reader has them before any Flow object is built)."""
        self.connections += 1
        if not answered:
            self.unanswered += 1
        if packets is not None:
            self.packets = packets if self.packets is None else self.packets + packets
        if bytes_ is not None:
            self.bytes = bytes_ if self.bytes is None else self.bytes + bytes_
        if ts is None:
            self.untimed = True
            return
        if self.first_seen is None or ts < self.first_seen:
            self.first_seen = ts
        if self.last_seen is None or ts > self.last_seen:
            self.last_seen = ts

    def merge(self, other: Counters) -> None:
        """Add ``other``: counts add (None when neither has counters), times widen. Written out, not
        through helpers: serve merges every edge that two batches of a group share."""
        self.connections += other.connections
        self.unanswered += other.unanswered
        if other.packets is not None:
            self.packets = other.packets if self.packets is None else self.packets + other.packets
        if other.bytes is not None:
            self.bytes = other.bytes if self.bytes is None else self.bytes + other.bytes
        if other.first_seen is not None and (self.first_seen is None or other.first_seen < self.first_seen):
            self.first_seen = other.first_seen
        if other.last_seen is not None and (self.last_seen is None or other.last_seen > self.last_seen):
            self.last_seen = other.last_seen
        self.untimed |= other.untimed


@dataclass(slots=True)
class EdgeTotals(Counters):
    samples: list[Sample] = field(default_factory=list)
    # connections learnt from a table of open connections, by source; the rest were captured
    established: dict[EstablishedSource, Count] = field(default_factory=dict)

    def copy(self) -> EdgeTotals:
        """A copy to merge into, leaving this one as it is (its samples and established counts copied)."""
        return EdgeTotals(self.connections, self.packets, self.bytes, self.first_seen, self.last_seen, self.untimed,
                          self.unanswered, list(self.samples), dict(self.established))


@dataclass(frozen=True, slots=True)
class DnsSeen:
    ttl: Ttl
    first_seen: Seconds
    last_seen: Seconds


@dataclass
class Batch:
    """What one transaction writes: edges, DNS answers, and names learnt for external identities."""

    edges: dict[EdgeKey, EdgeTotals] = field(default_factory=dict)
    dns: dict[tuple[str, str], DnsSeen] = field(default_factory=dict)  # (name, address)
    names: dict[Identity, set[str]] = field(default_factory=dict)
