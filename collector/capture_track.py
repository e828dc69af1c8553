"""Captured frames to flows and DNS answers: decode, keep one sighting per connection, track.

On a pod's host-side interface a frame received from the pod is that pod's egress, a frame the host
sends out of it (``PACKET_OUTGOING``) is its ingress. A connection between two pods crosses two such
interfaces (and through a Service, with two different destination addresses: the ClusterIP before
DNAT, the backend after), so it is counted where its initiator sent it: a frame is kept when it was
seen at the initiator's egress, or when the initiator is no pod (a node, a host-network process, an
external client: only the receiving pod's interface sees those). The initiator is the SYN's sender,
the SYN-ACK's receiver, a UDP datagram's sender. Trade-off: a pod's connections are learnt only on a
node where the collector runs, which is every node for a DaemonSet.

Flows are taken every interval with :meth:`FrameTracker.take`: only handshakes are captured, so a
connection is complete as soon as its SYN is seen. A SYN-ACK arriving after the cut that took its SYN
adds nothing (the SYN is remembered, below); only one whose SYN was never seen (or no longer
remembered) starts a sighting, which then gives the connection its direction.

Attempts never answered: each SYN (4-tuple and initial sequence number) is remembered for
:data:`SYN_WINDOW` seconds, across interval cuts. A SYN seen again within it is a retransmission,
counted, never a new connection (a SYN a policy drops is retransmitted for two minutes, across many
intervals); a SYN-ACK acknowledging it marks it answered, and is not tracked when the SYN's
connection was already taken. The first retransmission of a SYN not yet
answered counts an unanswered attempt (``unanswered``): a connection that an enforcement point (the
CNI's policies) or a dead peer dropped. The connection itself is learnt from its first SYN, so a
shadow set judges it like any other, and its flow says so (``answered=False``, which the store counts
per edge): :meth:`FrameTracker.take` given the time holds back a connection whose SYN is still
waiting and younger than :data:`HOLD` seconds to a later take, by when its retransmission (after 1 s)
or its SYN-ACK has been seen. The cost: a connection cut within its first seconds is delivered an
interval later.
"""

from __future__ import annotations

import struct
from collections.abc import Set
from dataclasses import replace

from netpol_gen.ingest.decode import DECODERS, LINKTYPE_ETHERNET, PROTO_TCP, TCP_ACK, TCP_SYN, Address
from netpol_gen.ingest.dns import DnsAnswer
from netpol_gen.ingest.flowtrack import FlowTracker, ntop
from netpol_gen.ingest.pcap import CaptureStats, dns_answers, dns_over_tcp_answers
from netpol_gen.model.flows import Flow

DNS_PORT = 53
SYN_WINDOW = 130.0  # seconds Linux retransmits an unanswered SYN (tcp_syn_retries 6: 1+2+...+64 s)
HOLD = 3.0  # seconds a waiting SYN's connection is held back: its first two retransmissions (1 s, 3 s) fall in


_WAITING, _ANSWERED, _UNANSWERED = 0.0, 1.0, 2.0  # what became of a remembered SYN
_SEEN, _STATE, _CUT = 0, 1, 2  # a remembered SYN: first seen, state, the take() that will take (or took) it


class FrameTracker:
    """Feeds Ethernet frames to a :class:`FlowTracker` that holds at most ``max_tracked`` connections.

    When full, everything tracked is taken early into the pending flows: memory stays bounded under
    a SYN flood or a port scan, at worst a few more sightings of one connection.
    """

    def __init__(self, max_tracked: int = 1_000_000) -> None:
        self.stats = CaptureStats()
        self.other_end = 0  # frames skipped: a sighting at the receiving pod of a pod's connection
        self.pod_addresses: Set[Address] = frozenset()
        self._max = max_tracked
        # Timeouts never expire anything between two takes: take() flushes.
        self._tracker = FlowTracker(udp_timeout=float("inf"), tcp_timeout=float("inf"), count_tcp=False)
        self._dns: list[DnsAnswer] = []
        self._decode = DECODERS[LINKTYPE_ETHERNET]
        # SYNs of the last SYN_WINDOW seconds: (initiator, port, responder, port, ISN) -> [first seen, state, cut]
        self._syns: dict[tuple[Address, int, Address, int, int], list[float]] = {}
        self._cut = 0  # take()s so far
        self._latest = 0.0
        self.syn_retransmits = 0
        self.unanswered = 0
        self._held: list[tuple[Flow, list[float]]] = []  # connections whose SYN was waiting at a take, with it

    def frame(self, ts: float, outgoing: bool, frame: bytes) -> None:
        """One frame captured on a pod's host-side interface; ``outgoing``: sent by the host to the pod."""
        stats = self.stats
        stats.packets_filtered_in += 1
        try:
            decoded = self._decode(frame)
        except (struct.error, IndexError):
            stats.packets_short += 1
            return
        if decoded is None:
            stats.packets_ignored += 1
            return
        proto, src, dst, sport, dport, flags, seq, ack, payload, end, ip_len, key = decoded
        if sport == DNS_PORT:  # an answer names peers and starts nothing (a resolver querying from port 53 is missed)
            if proto == PROTO_TCP:
                self._dns.extend(dns_over_tcp_answers(frame[payload:end], ts, stats))
            else:
                self._dns.extend(dns_answers(frame[payload:end], ts, stats))
            if not flags & TCP_SYN:  # a DNS server's SYN-ACK still names a TCP connection
                return
        responder_sent = proto == PROTO_TCP and flags & TCP_ACK
        initiator, at_initiator = (dst, outgoing) if responder_sent else (src, not outgoing)
        if not at_initiator and initiator in self.pod_addresses:
            self.other_end += 1
            return
        if proto == PROTO_TCP and flags & TCP_SYN and self._handshake(ts, src, dst, sport, dport, flags, seq, ack):
            return
        tracker = self._tracker
        if proto == PROTO_TCP:
            tracker.tcp(ts, key, flags, seq, ack, ip_len)
        else:
            tracker.udp(ts, key, ip_len)
        if tracker.tracked() >= self._max:
            tracker.flush()

    def _handshake(self, ts: float, src: Address, dst: Address, sport: int, dport: int, flags: int, seq: int,
                   ack: int) -> bool:
        """Note a SYN or SYN-ACK; True when the frame is not to be tracked: a retransmitted SYN, or the
        SYN-ACK of a SYN an earlier take() took (the connection was learnt, a second sighting would count
        it twice in the flows written out)."""
        self._latest = max(self._latest, ts)
        if flags & TCP_ACK:  # the responder's SYN-ACK answers the SYN whose ISN it acknowledges
            seen = self._syns.get((dst, dport, src, sport, (ack - 1) & 0xFFFFFFFF))
            if seen is None:
                return False
            seen[_STATE] = _ANSWERED
            return seen[_CUT] < self._cut
        key = (src, sport, dst, dport, seq)
        seen = self._syns.get(key)
        if seen is None:
            if len(self._syns) < self._max:
                self._syns[key] = [ts, _WAITING, self._cut]
            return False
        self.syn_retransmits += 1
        if seen[_STATE] == _WAITING:
            seen[_STATE] = _UNANSWERED
            self.unanswered += 1
        return True

    def tracked(self) -> int:
        """Connections held now (reported before each take: how close the interval came to the bound)."""
        return self._tracker.tracked()

    def take(self, now: float | None = None) -> tuple[list[Flow], list[DnsAnswer]]:
        """The flows and DNS answers since the last take. Given ``now`` (the capture clock), a connection
        whose SYN is waiting and younger than :data:`HOLD` is held back to a later take; without, every
        connection is taken (the last take)."""
        tracker = self._tracker
        tracker.flush()
        answers = self._dns
        fresh: dict[tuple[str, int | None, str, int], list[float]] = {
            (ntop(key[0]), key[1], ntop(key[2]), key[3]): seen
                 for key, seen in self._syns.items() if seen[_CUT] == self._cut}  # SYNs first seen since the last take
        pending: list[tuple[Flow, list[float] | None]] = [*self._held, *(
            (flow, fresh.get((flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port))) for flow in tracker.done)]
        flows, self._held = [], []
        for flow, seen in pending:
            if seen is None or flow.protocol != "TCP":
                flows.append(flow)
            elif seen[_STATE] == _UNANSWERED:
                flows.append(replace(flow, answered=False))
            elif seen[_STATE] == _WAITING and now is not None and now - seen[_SEEN] < HOLD:
                self._held.append((flow, seen))
            else:
                flows.append(flow)
        tracker.done.clear()
        self._dns = []
        self._cut += 1
        horizon = self._latest - SYN_WINDOW
        self._syns = {key: seen for key, seen in self._syns.items() if seen[_SEEN] >= horizon}
        self.stats.flows = tracker.stats.flows
        self.stats.direction_unknown = tracker.stats.direction_unknown
        return flows, answers
