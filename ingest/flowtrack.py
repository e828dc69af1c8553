"""Turn decoded packets into connections with a known initiator, in bounded memory.

TCP direction comes only from the handshake: a SYN without ACK names the initiator; when the SYN
was not captured, the SYN-ACK's sender is the responder. A connection with neither is counted as
"direction unknown" and never emitted: guessing from port numbers is what produces wrong policies,
unless a table of open connections dumped at capture time names it (``hints``, from
:func:`netpol_gen.ingest.dumps.direction_hints`): it is then emitted as a :class:`ResolvedFlow`, to
the server the dump names (a conntrack entry's DNAT backend rather than the ClusterIP).
A connection is identified by its 4-tuple plus the initiator's initial sequence number, so
retransmitted (or, with ``tcpdump -i any``, duplicated) SYNs are one flow while a new connection
reusing the 4-tuple is another. A SYN seen again at least :data:`RETRANSMIT_AFTER` seconds after the
first (a retransmission, not a duplicate of the same frame) while no SYN-ACK was seen marks the flow
``answered=False``: an attempt a policy (or a dead peer) dropped.

UDP has no handshake: the first packet of a 5-tuple is the request and its sender the initiator;
packets either way within ``udp_timeout`` of the last one extend that flow (replies are not flows).

A flow is emitted when its entry ends: a UDP entry idle for ``udp_timeout``, a TCP connection idle
for ``tcp_timeout``, or closed (RST, or FIN both ways) and idle for :data:`TCP_CLOSED_LINGER`; all
remaining entries are emitted by :meth:`FlowTracker.flush`. Entries are swept on capture time, so
memory holds only connections active within the timeouts, however long the capture.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

from netpol_gen.ingest.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Address
from netpol_gen.model.flows import Flow, make_flow

# A closed connection's last ACKs and stray retransmissions arrive within this many seconds.
TCP_CLOSED_LINGER = 30.0
# A SYN seen again this long after the first is a retransmission (Linux waits at least TCP_RTO_MIN, 200 ms;
# the first SYN retransmission comes after 1 s), not the same frame captured twice (``tcpdump -i any``).
RETRANSMIT_AFTER = 0.2

_PORTS = struct.Struct("!HH")
_ENDS_V4, _ENDS_V6 = struct.Struct("!4s4sHH"), struct.Struct("!16s16sHH")  # a key's addresses and ports
_SPLIT_V4, _SPLIT_V6 = struct.Struct("4s4s2s2s"), struct.Struct("16s16s2s2s")  # ... as bytes, to reverse
# A dump's word on a connection seen without handshake: any four-tuple it shows (either order) ->
# the connection initiator first, to the server that answered (a DNATed backend), and the dump's kind.
Hints = Mapping[tuple[str, int, str, int], tuple[tuple[str, int, str, int], str]]


class _Conn:
    """One tracked connection, held under its key in both directions (:func:`wire_key`, :func:`_keys`):
    ``key`` is the initiator's direction, ``isn`` is None when the direction is unknown."""

    __slots__ = (
        "answered",
        "bytes",
        "closed",
        "fin_from_dst",
        "fin_from_src",
        "first",
        "isn",
        "key",
        "last",
        "packets",
        "retransmitted",
        "rkey",
    )

    def __init__(self, key: bytes, rkey: bytes, ts: float, isn: int | None) -> None:
        self.key, self.rkey, self.first, self.last, self.isn = key, rkey, ts, ts, isn
        self.packets = self.bytes = 0
        self.fin_from_src = self.fin_from_dst = self.closed = False
        self.answered = False  # a SYN-ACK was seen
        self.retransmitted = False  # the SYN was seen again, RETRANSMIT_AFTER or more after the first


def wire_key(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """A packet's connection key as its headers hold it: source and destination address (4 or 16
    bytes), then source and destination port (2 bytes each, big-endian). One ``bytes`` object is a
    cheap dictionary key that a decoder slices from the frame without unpacking a field."""
    return src + dst + _PORTS.pack(sport, dport)


def _keys(key: bytes, reply: int) -> tuple[bytes, bytes]:
    """The initiator's key and the other direction's, for a packet with ``key`` that the initiator sent
    (``reply`` false) or the responder. Always two keys: the key of a connection to the same address
    and port reversed is itself, so its second key gets a byte no packet's key has. A table then holds
    each connection as two adjacent entries, and is walked with a step of two (:func:`_each`)."""
    src, dst, sport, dport = (_SPLIT_V4 if len(key) == 12 else _SPLIT_V6).unpack(key)
    other = b"".join((dst, src, dport, sport))
    if other == key:
        return key, key + b"\0"
    return (other, key) if reply else (key, other)


@dataclass
class TrackStats:
    """Connections emitted, and TCP connections seen without a handshake: direction unknown, or
    ``resolved`` by a dump's hints (those are among ``flows``)."""

    flows: int = 0
    direction_unknown: int = 0
    resolved: int = 0


@dataclass(frozen=True, slots=True)
class ResolvedFlow:
    """A connection seen without its handshake whose initiator a dump named; ``source`` is the dump's kind."""

    flow: Flow
    source: str


@lru_cache(maxsize=1 << 16)  # a capture's flows share few addresses: format each once
def ntop(address: Address) -> str:
    if isinstance(address, int):
        address = address.to_bytes(4, "big")
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


class FlowTracker:
    """Feed packets with :meth:`tcp`/:meth:`udp` in capture order; take finished flows from :attr:`done`
    (and clear it: it is the same list for the tracker's life, so the caller can hold on to it).

    ``count_tcp=False`` emits TCP flows without packet/byte counts, for when only handshake packets
    are seen (a SYN/FIN/RST capture filter): partial counts would look real and mislead.
    """

    def __init__(self, *, udp_timeout: float, tcp_timeout: float, count_tcp: bool = True,
                 hints: Hints | None = None) -> None:
        self.udp_timeout = udp_timeout
        self.tcp_timeout = tcp_timeout
        self.count_tcp = count_tcp
        self.hints = hints or {}
        self.stats = TrackStats()
        self.done: list[Flow] = []
        self.resolved: list[ResolvedFlow] = []  # taken and cleared like ``done``
        self._tcp: dict[bytes, _Conn] = {}
        self._udp: dict[bytes, _Conn] = {}
        self._sweep_every = min(udp_timeout, TCP_CLOSED_LINGER)
        self._next_sweep = float("-inf")

    def tcp(self, ts: float, key: bytes, flags: int, seq: int, ack: int, length: int) -> None:
        """Account one TCP segment of ``length`` IP bytes; ``key`` is its :func:`wire_key`."""
        table = self._tcp
        conn = table.get(key)
        if conn is not None and not flags & (TCP_SYN | TCP_FIN | TCP_RST):  # mid-connection: most packets
            conn.packets += 1
            conn.bytes += length
            conn.last = ts
            return
        if flags & TCP_SYN:
            # A SYN-ACK's sender is the responder, and its ack names the SYN's ISN.
            isn = (ack - 1) & 0xFFFFFFFF if flags & TCP_ACK else seq
            if conn is None or conn.isn != isn:
                if conn is not None:
                    self._finish(conn, is_tcp=True)
                ikey, okey = _keys(key, flags & TCP_ACK)
                # In place when the 4-tuple was tracked: its entries keep their order (the flush's).
                conn = table[ikey] = table[okey] = _Conn(ikey, okey, ts, isn)
            if flags & TCP_ACK:
                conn.answered = True
            elif ts - conn.first >= RETRANSMIT_AFTER:
                conn.retransmitted = True
        elif conn is None:
            ikey, okey = _keys(key, 0)
            conn = table[ikey] = table[okey] = _Conn(ikey, okey, ts, None)
        if flags & (TCP_FIN | TCP_RST):
            if flags & TCP_RST:
                conn.closed = True
            elif key == conn.key:
                conn.fin_from_src = True
            else:
                conn.fin_from_dst = True
            conn.closed = conn.closed or (conn.fin_from_src and conn.fin_from_dst)
        conn.packets += 1
        conn.bytes += length
        conn.last = ts
        if ts >= self._next_sweep:
            self._sweep(ts)

    def udp(self, ts: float, key: bytes, length: int) -> None:
        """Account one UDP datagram of ``length`` IP bytes; ``key`` is its :func:`wire_key`."""
        table = self._udp
        conn = table.get(key)
        if conn is not None and ts - conn.last > self.udp_timeout:
            self._drop(table, conn)
            self._finish(conn, is_tcp=False)
            conn = None
        if conn is None:
            ikey, okey = _keys(key, 0)
            conn = table[ikey] = table[okey] = _Conn(ikey, okey, ts, None)
        conn.packets += 1
        conn.bytes += length
        conn.last = ts
        if ts >= self._next_sweep:
            self._sweep(ts)

    def flush(self) -> None:
        """End the capture: emit every connection still tracked."""
        for table, is_tcp in ((self._tcp, True), (self._udp, False)):
            for conn in _each(table):
                self._finish(conn, is_tcp=is_tcp)
            table.clear()

    def tracked(self) -> int:
        """How many connections are held right now (for memory checks)."""
        return (len(self._tcp) + len(self._udp)) >> 1

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_every
        open_before, closed_before = now - self.tcp_timeout, now - TCP_CLOSED_LINGER
        table = self._tcp
        expired = [conn for conn in _each(table) if conn.last < (closed_before if conn.closed else open_before)]
        for conn in expired:
            self._drop(table, conn)
            self._finish(conn, is_tcp=True)
        udp_before = now - self.udp_timeout
        table = self._udp
        expired = [conn for conn in _each(table) if conn.last < udp_before]
        for conn in expired:
            self._drop(table, conn)
            self._finish(conn, is_tcp=False)

    @staticmethod
    def _drop(table: dict[bytes, _Conn], conn: _Conn) -> None:
        del table[conn.key], table[conn.rkey]

    def _finish(self, conn: _Conn, *, is_tcp: bool) -> None:
        source = None
        key = conn.key
        src_address, dst_address, sport, dport = (_ENDS_V4 if len(key) < 36 else _ENDS_V6).unpack_from(key)
        src, dst = ntop(src_address), ntop(dst_address)
        if is_tcp and conn.isn is None:
            hint = self.hints.get((src, sport, dst, dport)) or self.hints.get((dst, dport, src, sport))
            if hint is None:
                self.stats.direction_unknown += 1
                return
            (src, sport, dst, dport), source = hint
        counted = self.count_tcp or not is_tcp
        flow = make_flow(src, dst, dport, "TCP" if is_tcp else "UDP", sport, conn.first,
                         conn.packets if counted else None, conn.bytes if counted else None,
                         not conn.retransmitted or conn.answered)
        if source is None:
            self.done.append(flow)
        else:
            self.resolved.append(ResolvedFlow(flow, source))
            self.stats.resolved += 1
        self.stats.flows += 1


def _each(table: dict[bytes, _Conn]) -> Iterator[_Conn]:
    """Each connection of a table once, in the table's order (it is held as two adjacent entries)."""
    return islice(table.values(), 0, None, 2)
