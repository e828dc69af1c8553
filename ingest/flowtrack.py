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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from netpol_gen.ingest.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Address
from netpol_gen.model.flows import Flow

# A closed connection's last ACKs and stray retransmissions arrive within this many seconds.
TCP_CLOSED_LINGER = 30.0
# A SYN seen again this long after the first is a retransmission (Linux waits at least TCP_RTO_MIN, 200 ms;
# the first SYN retransmission comes after 1 s), not the same frame captured twice (``tcpdump -i any``).
RETRANSMIT_AFTER = 0.2

_Key = tuple[Address, int, Address, int]
# A dump's word on a connection seen without handshake: any four-tuple it shows (either order) ->
# the connection initiator first, to the server that answered (a DNATed backend), and the dump's kind.
Hints = Mapping[tuple[str, int, str, int], tuple[tuple[str, int, str, int], str]]


@dataclass(slots=True)
class _Conn:
    """One tracked connection; ``src`` is the initiator, ``isn`` is None when direction is unknown."""

    src: Address
    sport: int
    dst: Address
    dport: int
    first: float
    last: float
    isn: int | None = None
    packets: int = 0
    bytes: int = 0
    fin_from_src: bool = False
    fin_from_dst: bool = False
    closed: bool = False
    answered: bool = False  # a SYN-ACK was seen
    retransmitted: bool = False  # the SYN was seen again, RETRANSMIT_AFTER or more after the first


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
        return socket.inet_ntop(socket.AF_INET, address.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, address)


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
        self._tcp: dict[_Key, _Conn] = {}
        self._udp: dict[_Key, _Conn] = {}
        self._sweep_every = min(udp_timeout, TCP_CLOSED_LINGER)
        self._next_sweep = float("-inf")

    def tcp(self, ts: float, src: Address, dst: Address, sport: int, dport: int, flags: int, seq: int,
            ack: int, length: int) -> None:
        """Account one TCP segment of ``length`` IP bytes."""
        # One key for both directions (both addresses of one family: int with int, bytes with bytes).
        key = (src, sport, dst, dport) if (src, sport) < (dst, dport) else (dst, dport, src, sport)
        conn = self._tcp.get(key)
        if conn is not None and not flags & (TCP_SYN | TCP_FIN | TCP_RST):  # mid-connection: most packets
            conn.packets += 1
            conn.bytes += length
            conn.last = ts
            return
        if flags & TCP_SYN:
            if flags & TCP_ACK:  # SYN-ACK: the sender is the responder; the ack names the SYN's ISN
                isn = (ack - 1) & 0xFFFFFFFF
                initiator: tuple[Address, int, Address, int] = (dst, dport, src, sport)
            else:
                isn = seq
                initiator = (src, sport, dst, dport)
            if conn is None or conn.isn != isn:
                if conn is not None:
                    self._finish(conn, is_tcp=True)
                conn = self._tcp[key] = _Conn(*initiator, ts, ts, isn)
            if flags & TCP_ACK:
                conn.answered = True
            elif ts - conn.first >= RETRANSMIT_AFTER:
                conn.retransmitted = True
        elif conn is None:
            conn = self._tcp[key] = _Conn(src, sport, dst, dport, ts, ts)
        if flags & (TCP_FIN | TCP_RST):
            if flags & TCP_RST:
                conn.closed = True
            elif src == conn.src and sport == conn.sport:
                conn.fin_from_src = True
            else:
                conn.fin_from_dst = True
            conn.closed = conn.closed or (conn.fin_from_src and conn.fin_from_dst)
        conn.packets += 1
        conn.bytes += length
        conn.last = ts
        if ts >= self._next_sweep:
            self._sweep(ts)

    def udp(self, ts: float, src: Address, dst: Address, sport: int, dport: int, length: int) -> None:
        """Account one UDP datagram of ``length`` IP bytes."""
        key = (src, sport, dst, dport) if (src, sport) < (dst, dport) else (dst, dport, src, sport)
        conn = self._udp.get(key)
        if conn is not None and ts - conn.last > self.udp_timeout:
            self._finish(self._udp.pop(key), is_tcp=False)
            conn = None
        if conn is None:
            conn = self._udp[key] = _Conn(src, sport, dst, dport, ts, ts)
        conn.packets += 1
        conn.bytes += length
        conn.last = ts
        if ts >= self._next_sweep:
            self._sweep(ts)

    def flush(self) -> None:
        """End the capture: emit every connection still tracked."""
        for table, is_tcp in ((self._tcp, True), (self._udp, False)):
            for conn in table.values():
                self._finish(conn, is_tcp=is_tcp)
            table.clear()

    def tracked(self) -> int:
        """How many connections are held right now (for memory checks)."""
        return len(self._tcp) + len(self._udp)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_every
        open_before, closed_before = now - self.tcp_timeout, now - TCP_CLOSED_LINGER
        expired = [key for key, conn in self._tcp.items()
                   if conn.last < (closed_before if conn.closed else open_before)]
        for key in expired:
            self._finish(self._tcp.pop(key), is_tcp=True)
        udp_before = now - self.udp_timeout
        expired = [key for key, conn in self._udp.items() if conn.last < udp_before]
        for key in expired:
            self._finish(self._udp.pop(key), is_tcp=False)

    def _finish(self, conn: _Conn, *, is_tcp: bool) -> None:
        source = None
        src, sport, dst, dport = ntop(conn.src), conn.sport, ntop(conn.dst), conn.dport
        if is_tcp and conn.isn is None:
            hint = self.hints.get((src, sport, dst, dport)) or self.hints.get((dst, dport, src, sport))
            if hint is None:
                self.stats.direction_unknown += 1
                return
            (src, sport, dst, dport), source = hint
        counted = self.count_tcp or not is_tcp
        flow = Flow(  # positional: src_ip, dst_ip, dst_port, protocol, src_port, ts, packets, bytes, answered
            src, dst, dport, "TCP" if is_tcp else "UDP", sport, conn.first,
            conn.packets if counted else None, conn.bytes if counted else None,
            not conn.retransmitted or conn.answered,
        )
        if source is None:
            self.done.append(flow)
        else:
            self.resolved.append(ResolvedFlow(flow, source))
            self.stats.resolved += 1
        self.stats.flows += 1
