"""Frames to flows on pod interfaces: one sighting per connection, at its initiator, and DNS answers."""

from __future__ import annotations

import ipaddress

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from netpol_gen.collector.capture import compile_bpf
from netpol_gen.collector.capture_track import HOLD, FrameTracker

POD_A, POD_B, OUTSIDE = "10.0.0.1", "10.0.1.1", "192.0.2.7"


def _tracker(max_tracked: int = 1000) -> FrameTracker:
    tracker = FrameTracker(max_tracked)
    tracker.pod_addresses = frozenset(int(ipaddress.ip_address(ip)) for ip in (POD_A, POD_B))
    return tracker


def _tcp(src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 100, ack: int = 0) -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack))


def _key(tracker: FrameTracker) -> list[tuple[str, str, int, str]]:
    flows, _ = tracker.take()
    return [(f.src_ip, f.dst_ip, f.dst_port, f.protocol) for f in flows]


def test_pod_to_pod_is_counted_at_the_initiators_egress_only() -> None:
    tracker = _tracker()
    syn = _tcp(POD_A, POD_B, 40000, 8080, "S")
    synack = _tcp(POD_B, POD_A, 8080, 40000, "SA", seq=900, ack=101)
    tracker.frame(1.0, False, syn)  # leaves A: A's egress
    tracker.frame(1.0, True, syn)  # enters B: the same connection at the other end
    tracker.frame(1.0, False, synack)  # leaves B: the responder's egress
    tracker.frame(1.0, True, synack)  # enters A
    assert _key(tracker) == [(POD_A, POD_B, 8080, "TCP")]
    assert tracker.other_end == 2


def test_a_connection_from_outside_is_counted_where_it_enters() -> None:
    tracker = _tracker()
    tracker.frame(1.0, True, _tcp(OUTSIDE, POD_B, 50000, 443, "S"))
    assert _key(tracker) == [(OUTSIDE, POD_B, 443, "TCP")]


def test_a_syn_ack_entering_the_initiator_gives_the_direction_when_the_syn_was_missed() -> None:
    tracker = _tracker()
    tracker.frame(1.0, True, _tcp(POD_B, POD_A, 8080, 40000, "SA", seq=900, ack=101))
    assert _key(tracker) == [(POD_A, POD_B, 8080, "TCP")]


def test_dns_answers_name_addresses_and_start_no_flow() -> None:
    tracker = _tracker()
    query = bytes(Ether() / IP(src=POD_A, dst=POD_B) / UDP(sport=40001, dport=53)
                  / DNS(rd=1, qd=DNSQR(qname="x.test")))
    answer = bytes(Ether() / IP(src=POD_B, dst=POD_A) / UDP(sport=53, dport=40001)
                   / DNS(id=0, qr=1, qd=DNSQR(qname="x.test"), an=DNSRR(rrname="x.test", rdata=OUTSIDE, ttl=30)))
    tracker.frame(1.0, False, query)
    tracker.frame(1.0, False, answer)
    tracker.frame(1.0, True, answer)
    flows, answers = tracker.take()
    assert [(f.src_ip, f.dst_ip, f.dst_port, f.protocol) for f in flows] == [(POD_A, POD_B, 53, "UDP")]
    assert {(a.name, a.address) for a in answers} == {("x.test", OUTSIDE)}


def test_the_tracker_is_bounded_and_loses_nothing_when_full() -> None:
    tracker = _tracker(max_tracked=1000)
    for port in range(2500):
        tracker.frame(1.0, False, _tcp(POD_A, POD_B, 10000 + port, 8080, "S"))
        assert tracker.tracked() < 1000
    assert len(_key(tracker)) == 2500


def test_the_kernel_filter_compiles_without_privileges() -> None:
    assert compile_bpf().bf_len > 10


def test_a_retransmitted_syn_across_cuts_is_one_connection_and_one_unanswered_attempt() -> None:
    """Stands in for a SYN a policy drops: the client retransmits it at 1, 3, 7 s while intervals are cut."""
    tracker = _tracker()
    syn = _tcp(POD_A, POD_B, 40000, 5432, "S")
    tracker.frame(1.0, False, syn)
    assert _key(tracker) == [(POD_A, POD_B, 5432, "TCP")]
    for ts in (2.0, 4.0, 8.0):
        tracker.frame(ts, False, syn)
        assert _key(tracker) == []  # not a new connection
    assert (tracker.syn_retransmits, tracker.unanswered) == (3, 1)
    # an answered connection whose SYN is seen twice is no unanswered attempt
    other = _tcp(POD_A, POD_B, 40001, 8080, "S", seq=500)
    tracker.frame(10.0, False, other)
    tracker.frame(10.0, True, _tcp(POD_B, POD_A, 8080, 40001, "SA", seq=900, ack=501))
    tracker.frame(11.0, False, other)
    assert _key(tracker) == [(POD_A, POD_B, 8080, "TCP")]
    assert (tracker.syn_retransmits, tracker.unanswered) == (4, 1)
    # past the window, the same 4-tuple and ISN is a new attempt again
    tracker.frame(200.0, False, _tcp(POD_A, POD_B, 40002, 8080, "S"))
    tracker.take()
    tracker.frame(201.0, False, syn)
    assert _key(tracker) == [(POD_A, POD_B, 5432, "TCP")]


def test_a_syn_ack_after_the_cut_that_took_its_syn_is_no_second_sighting() -> None:
    """Stands in for an interval cut falling inside a handshake (seen once in CI: a connection written twice
    to the JSONL output, the store deduplicating it)."""
    tracker = _tracker()
    tracker.frame(1.0, False, _tcp(POD_A, POD_B, 40000, 8080, "S", seq=100))
    assert _key(tracker) == [(POD_A, POD_B, 8080, "TCP")]
    tracker.frame(1.001, True, _tcp(POD_B, POD_A, 8080, 40000, "SA", seq=900, ack=101))
    assert _key(tracker) == []
    # a SYN-ACK for another ISN on the same 4-tuple is another connection's, whose SYN was missed
    tracker.frame(2.0, True, _tcp(POD_B, POD_A, 8080, 40000, "SA", seq=901, ack=5001))
    assert _key(tracker) == [(POD_A, POD_B, 8080, "TCP")]


def _answered(tracker: FrameTracker, now: float | None) -> list[tuple[int, bool]]:
    flows, _ = tracker.take(now)
    return [(f.dst_port, f.answered) for f in flows]


def test_a_connection_whose_syn_is_waiting_is_held_until_answered_or_retransmitted() -> None:
    """Stands in for an interval cut right after a SYN: an nftables drop on the path (its SYN retransmitted
    after 1 s) against a peer that answers, both cut before the answer or the retransmission came."""
    tracker = _tracker()
    dropped = _tcp(POD_A, POD_B, 40000, 5432, "S", seq=100)
    tracker.frame(1.0, False, dropped)
    tracker.frame(1.0, False, _tcp(POD_A, POD_B, 40001, 8080, "S", seq=500))
    assert _answered(tracker, 1.2) == []  # both held: neither answered nor retransmitted yet
    tracker.frame(1.3, True, _tcp(POD_B, POD_A, 8080, 40001, "SA", seq=900, ack=501))
    tracker.frame(2.0, False, dropped)
    assert sorted(_answered(tracker, 2.1)) == [(5432, False), (8080, True)]
    assert _answered(tracker, 3.0) == []  # each connection once
    # a SYN retransmitted before the cut is marked at once; one waiting past HOLD is taken as it is
    tracker.frame(10.0, False, _tcp(POD_A, POD_B, 40002, 5432, "S", seq=7))
    tracker.frame(11.0, False, _tcp(POD_A, POD_B, 40002, 5432, "S", seq=7))
    tracker.frame(11.0, False, _tcp(POD_A, POD_B, 40003, 9000, "S", seq=8))
    assert _answered(tracker, 11.5) == [(5432, False)]
    assert _answered(tracker, 11.0 + HOLD) == [(9000, True)]
    # the last take holds nothing back
    tracker.frame(20.0, False, _tcp(POD_A, POD_B, 40004, 9000, "S", seq=9))
    assert _answered(tracker, None) == [(9000, True)]
