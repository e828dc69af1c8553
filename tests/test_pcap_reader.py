"""pcap import: real packets built with scapy, written with scapy's writers, read by ``read_capture``.

Every flow test runs twice: through the tcpdump BPF pre-filter (when tcpdump is installed) and with
every packet read in Python, so the filter is checked to pass what the flow logic needs.
"""

from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, PcapWriter, wrpcap

from netpol_gen.errors import CaptureError, InputError
from netpol_gen.ingest.dns import DnsAnswer, parse_response
from netpol_gen.ingest.flowtrack import FlowTracker, wire_key
from netpol_gen.ingest.pcap import CaptureResult, CaptureWarning, read_capture
from netpol_gen.model.flows import Flow

T0 = 1_700_000_000.0
CLIENT, SERVER, EXTERNAL = "10.244.1.5", "10.244.2.7", "93.184.216.34"
HAVE_TCPDUMP = shutil.which("tcpdump") is not None


@pytest.fixture(params=[False, True], ids=["python", "bpf"])
def bpf(request: pytest.FixtureRequest) -> bool:
    if request.param and not HAVE_TCPDUMP:
        pytest.skip("tcpdump is not installed: the BPF path cannot run")
    return bool(request.param)


def at(pkt: Packet, t: float) -> Packet:
    pkt.time = T0 + t
    return pkt


def read(path: Path, **kwargs: Any) -> tuple[list[Flow], list[DnsAnswer], CaptureResult]:
    result = read_capture(str(path), **kwargs)
    records = list(result.records)
    flows = [r for r in records if isinstance(r, Flow)]
    answers = [r for r in records if isinstance(r, DnsAnswer)]
    assert len(flows) + len(answers) == len(records)
    return flows, answers, result


def write(tmp_path: Path, packets: list[Packet], name: str = "c.pcap", **kwargs: object) -> Path:
    path = tmp_path / name
    wrpcap(str(path), packets, **kwargs)
    return path


def handshake(client: str, server: str, sport: int, dport: int, isn: int = 1000, t: float = 0.0,
              ip: type = IP, link: Packet | None = None) -> list[Packet]:
    """A full TCP conversation: handshake, one request/response, FIN both ways, last ACK."""
    server_isn = 7_000_000

    def seg(src: str, dst: str, sp: int, dp: int, flags: str, dt: float, data: bytes = b"") -> Packet:
        seq, ack = (isn, server_isn + 1) if src == client else (server_isn, isn + 1)
        pkt = ip(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack) / Raw(data)
        return at((link.copy() / pkt) if link is not None else Ether() / pkt, t + dt)
    return [
        seg(client, server, sport, dport, "S", 0.0),
        seg(server, client, dport, sport, "SA", 0.001),
        seg(client, server, sport, dport, "A", 0.002),
        seg(client, server, sport, dport, "PA", 0.003, b"GET / HTTP/1.1\r\n\r\n"),
        seg(server, client, dport, sport, "PA", 0.004, b"HTTP/1.1 200 OK\r\n\r\n" + bytes(300)),
        seg(client, server, sport, dport, "FA", 0.005),
        seg(server, client, dport, sport, "FA", 0.006),
        seg(client, server, sport, dport, "A", 0.007),
    ]


def ip_bytes(packets: list[Packet]) -> int:
    return sum(len(p[IP] if IP in p else p[IPv6]) for p in packets)


# --- TCP direction -------------------------------------------------------------------------------


def test_tcp_flow_direction_and_counts_from_syn(tmp_path: Path, bpf: bool) -> None:
    packets = handshake(CLIENT, SERVER, 40000, 8080, t=5.0)
    flows, _, result = read(write(tmp_path, packets), bpf=bpf)
    assert [(f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.protocol) for f in flows] == [
        (CLIENT, 40000, SERVER, 8080, "TCP")
    ]
    assert flows[0].ts == pytest.approx(T0 + 5.0, abs=1e-6)
    if bpf:  # only the handshake passed the filter: counts would be partial, so there are none
        assert (flows[0].packets, flows[0].bytes) == (None, None)
        assert result.stats.packets_read is None and result.stats.bpf_filter
        assert result.stats.packets_filtered_in == 4  # SYN, SYN-ACK, FIN, FIN
    else:
        assert (flows[0].packets, flows[0].bytes) == (len(packets), ip_bytes(packets))
        assert result.stats.packets_read == len(packets) and result.stats.bpf_filter is None
    assert result.stats.flows == 1 and result.stats.direction_unknown == 0


def test_direction_is_never_guessed_from_ports(tmp_path: Path, bpf: bool) -> None:
    # The server side uses the ephemeral-looking port; the direction still comes from the SYN.
    packets = handshake("10.244.9.9", "10.244.8.8", 443, 50000)
    flows, _, _ = read(write(tmp_path, packets), bpf=bpf)
    assert [(f.src_ip, f.dst_port) for f in flows] == [("10.244.9.9", 50000)]


def test_retransmitted_syn_is_one_flow_and_a_new_isn_is_a_new_flow(tmp_path: Path, bpf: bool) -> None:
    first = handshake(CLIENT, SERVER, 40000, 80, isn=111, t=0.0)
    retransmit = at(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=80, flags="S", seq=111), 1.0)
    # The same 4-tuple reused later by a new connection (new initial sequence number).
    second = handshake(CLIENT, SERVER, 40000, 80, isn=999, t=20.0)
    flows, _, result = read(write(tmp_path, [first[0], retransmit, *first[1:], *second]), bpf=bpf)
    assert sorted(f.ts for f in flows) == pytest.approx([T0, T0 + 20.0])
    assert {(f.src_ip, f.dst_ip, f.dst_port) for f in flows} == {(CLIENT, SERVER, 80)}
    assert result.stats.flows == 2


def test_a_syn_retransmitted_without_answer_is_an_unanswered_attempt(tmp_path: Path, bpf: bool) -> None:
    """Stands in for a SYN an enforcement point drops, next to one answered after a retransmission and one
    captured twice in the same instant (``tcpdump -i any``: the same frame on two interfaces)."""
    def syn(sport: int, isn: int, t: float) -> Packet:
        return at(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=5432, flags="S", seq=isn), t)
    late_answer = handshake(CLIENT, SERVER, 40001, 5432, isn=222, t=10.0)
    twice = handshake(CLIENT, SERVER, 40002, 5432, isn=333, t=20.0)
    packets = [syn(40000, 111, 0.0), syn(40000, 111, 1.0), syn(40000, 111, 3.0),
               late_answer[0], syn(40001, 222, 11.0), *[at(p, p.time - T0 + 1.0) for p in late_answer[1:]],
               twice[0], syn(40002, 333, 20.0), *twice[1:]]
    flows, _, _ = read(write(tmp_path, packets), bpf=bpf)
    assert sorted((f.src_port, f.answered) for f in flows) == [(40000, False), (40001, True), (40002, True)]
    assert '"answered":false' in next(f for f in flows if not f.answered).to_json()


def test_synack_without_syn_recovers_direction(tmp_path: Path, bpf: bool) -> None:
    packets = handshake(CLIENT, SERVER, 40001, 5432, t=3.0)[1:]  # the SYN was not captured
    flows, _, result = read(write(tmp_path, packets), bpf=bpf)
    assert [(f.src_ip, f.src_port, f.dst_ip, f.dst_port) for f in flows] == [(CLIENT, 40001, SERVER, 5432)]
    assert flows[0].ts == pytest.approx(T0 + 3.001, abs=1e-6)  # the SYN-ACK is the first packet seen
    assert result.stats.direction_unknown == 0


def test_connection_without_handshake_is_counted_not_emitted(tmp_path: Path, bpf: bool) -> None:
    mid_stream = handshake(CLIENT, SERVER, 40002, 6379)[3:]  # data and FINs only
    known = handshake(CLIENT, EXTERNAL, 40003, 443, t=1.0)
    flows, _, result = read(write(tmp_path, [*mid_stream, *known]), bpf=bpf)
    assert [(f.dst_ip, f.dst_port) for f in flows] == [(EXTERNAL, 443)]
    assert result.stats.direction_unknown == 1


def test_tcp_connection_closed_long_ago_is_emitted_before_the_capture_ends() -> None:
    tracker = FlowTracker(udp_timeout=120.0, tcp_timeout=3600.0)
    syn, fin = 0x02, 0x11
    one, two, three, four = (bytes([0, 0, 0, n]) for n in (1, 2, 3, 4))
    tracker.tcp(T0, wire_key(one, two, 40000, 80), syn, 7, 0, 60)
    tracker.tcp(T0 + 1, wire_key(one, two, 40000, 80), fin, 8, 0, 40)
    tracker.tcp(T0 + 1, wire_key(two, one, 80, 40000), fin, 9, 0, 40)
    tracker.tcp(T0 + 100, wire_key(three, four, 40000, 80), syn, 7, 0, 60)  # later traffic sweeps the closed one out
    assert [(f.src_ip, f.dst_ip, f.packets) for f in tracker.done] == [("0.0.0.1", "0.0.0.2", 3)]
    assert tracker.tracked() == 1


def test_connection_to_its_own_address_and_port_is_one_flow() -> None:
    # Stands in for a socket connected to itself (TCP simultaneous open on one port): both directions
    # have the same key, which the tracker must still hold, close and emit once.
    tracker = FlowTracker(udp_timeout=120.0, tcp_timeout=3600.0)
    me = bytes([10, 0, 0, 9])
    key = wire_key(me, me, 5000, 5000)
    syn_ack, rst = 0x12, 0x14  # both FINs would look sent by the initiator: an RST closes it
    tracker.tcp(T0, key, syn_ack, 1, 8, 60)  # the SYN-ACK first: the initiator is the ack's owner
    tracker.tcp(T0 + 1, key, rst, 2, 0, 40)
    assert tracker.tracked() == 1
    tracker.tcp(T0 + 100, wire_key(me, bytes([10, 0, 0, 8]), 40000, 80), 0x02, 7, 0, 60)
    assert [(f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.packets) for f in tracker.done] == [
        ("10.0.0.9", 5000, "10.0.0.9", 5000, 2)]
    assert tracker.tracked() == 1


# --- UDP request tracking -----------------------------------------------------------------------


def udp(src: str, dst: str, sport: int, dport: int, t: float, data: bytes = b"x" * 20) -> Packet:
    return at(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(data), t)


def test_udp_reply_extends_the_request_flow_until_the_timeout(tmp_path: Path, bpf: bool) -> None:
    packets = [
        udp(CLIENT, SERVER, 5000, 9000, 0.0),
        udp(SERVER, CLIENT, 9000, 5000, 0.5),
        udp(CLIENT, SERVER, 5000, 9000, 4.0),  # 3.5 s after the last packet: same flow
        udp(SERVER, CLIENT, 9000, 5000, 20.0),  # 16 s of silence > 10 s timeout: a new request
    ]
    flows, _, _ = read(write(tmp_path, packets), bpf=bpf, udp_timeout=10.0)
    got = sorted((f.ts, f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.packets) for f in flows)
    assert got == [
        (pytest.approx(T0), CLIENT, 5000, SERVER, 9000, 3),
        (pytest.approx(T0 + 20.0), SERVER, 9000, CLIENT, 5000, 1),
    ]
    assert all(f.protocol == "UDP" and f.bytes for f in flows)


def test_udp_state_stays_bounded_and_flows_stream_out() -> None:
    tracker = FlowTracker(udp_timeout=5.0, tcp_timeout=3600.0)
    emitted = 0
    high_water = 0
    for i in range(5000):
        key = wire_key((0x0AF40000 + i).to_bytes(4, "big"), bytes([10, 244, 0, 1]), 1024 + i % 60000, 53)
        tracker.udp(T0 + i, key, 60)
        emitted += len(tracker.done)
        tracker.done.clear()
        high_water = max(high_water, tracker.tracked())
    assert high_water <= 12  # about timeout + sweep interval entries, not 5000
    assert emitted > 4900
    tracker.flush()
    assert emitted + len(tracker.done) == 5000


# --- link types and network layers ---------------------------------------------------------------


@pytest.mark.parametrize("link", [Dot1Q(vlan=10), Dot1AD(vlan=20) / Dot1Q(vlan=30)], ids=["802.1q", "qinq"])
def test_vlan_tagged_frames(tmp_path: Path, bpf: bool, link: Packet) -> None:
    packets = handshake(CLIENT, SERVER, 41000, 443, link=Ether() / link)
    flows, _, _ = read(write(tmp_path, packets), bpf=bpf)
    assert [(f.src_ip, f.dst_ip, f.dst_port) for f in flows] == [(CLIENT, SERVER, 443)]


@pytest.mark.parametrize(("link", "linktype"), [(CookedLinux(), 113), (CookedLinuxV2(), 276)],
                         ids=["sll", "sll2"])
def test_linux_cooked_captures(tmp_path: Path, bpf: bool, link: Packet, linktype: int) -> None:
    packets = [*handshake(CLIENT, SERVER, 42000, 80, link=link), udp(CLIENT, SERVER, 6000, 53, 1.0)]
    packets[-1] = at(link.copy() / packets[-1][IP], 1.0)
    path = write(tmp_path, packets)
    assert struct.unpack("<I", path.read_bytes()[20:24])[0] == linktype
    flows, _, _ = read(path, bpf=bpf)
    assert sorted((f.protocol, f.dst_port) for f in flows) == [("TCP", 80), ("UDP", 53)]


def test_raw_ip_linktype(tmp_path: Path, bpf: bool) -> None:
    packets = [at(p[IP], float(p.time) - T0) for p in handshake(CLIENT, SERVER, 42001, 8443)]
    flows, _, _ = read(write(tmp_path, packets, linktype=101), bpf=bpf)
    assert [(f.src_ip, f.dst_port) for f in flows] == [(CLIENT, 8443)]


def test_ipv6_extension_headers_and_fragments(tmp_path: Path, bpf: bool) -> None:
    client, server = "fd00:10:244::5", "fd00:10:244::7"
    plain = handshake(client, server, 43000, 80, ip=IPv6)
    with_ext = at(Ether() / IPv6(src=client, dst=server) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                  / TCP(sport=43001, dport=8080, flags="S"), 1.0)
    first_frag = at(Ether() / IPv6(src=client, dst=server) / IPv6ExtHdrFragment(offset=0, m=1)
                    / UDP(sport=43002, dport=9000) / Raw(b"a" * 16), 2.0)
    later_frag = at(Ether() / IPv6(src=client, dst=server) / IPv6ExtHdrFragment(offset=3, m=0)
                    / Raw(b"\x00\x35\x00\x35" + b"b" * 16), 2.1)  # would read as port 53 if decoded
    flows, _, result = read(write(tmp_path, [*plain, with_ext, first_frag, later_frag]), bpf=bpf)
    assert sorted((f.protocol, f.src_ip, f.dst_ip, f.dst_port) for f in flows) == [
        ("TCP", client, server, 80), ("TCP", client, server, 8080), ("UDP", client, server, 9000)
    ]
    assert result.stats.packets_ignored == 1


def test_ipv4_options_and_fragments(tmp_path: Path, bpf: bool) -> None:
    with_options = at(Ether() / IP(src=CLIENT, dst=SERVER, options=[IPOption_RR()])
                      / TCP(sport=44000, dport=3306, flags="S"), 0.0)
    later_frag = at(Ether() / IP(src=CLIENT, dst=SERVER, proto=17, frag=100) / Raw(b"\x13\x88\x00\x35" * 8), 1.0)
    flows, _, result = read(write(tmp_path, [with_options, later_frag]), bpf=bpf)
    assert [(f.src_port, f.dst_port) for f in flows] == [(44000, 3306)]
    assert result.stats.packets_ignored == 1


def test_snaplen_cut_frame_is_counted_not_fatal(tmp_path: Path) -> None:
    whole = handshake(CLIENT, SERVER, 44100, 80)[0]
    path = tmp_path / "short.pcap"
    with PcapWriter(str(path), linktype=1) as writer:
        writer.write_header(None)
        writer.write_packet(bytes(whole)[:30], sec=int(T0), usec=0, caplen=30, wirelen=len(whole))
        writer.write(at(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=44101, dport=81, flags="S"), 1.0))
    flows, _, result = read(path, bpf=False)
    assert [f.dst_port for f in flows] == [81] and result.stats.packets_short == 1


# --- file formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("endianness", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_nanosecond_timestamps(tmp_path: Path, bpf: bool, endianness: str,
                                                    nano: bool) -> None:
    syn = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=45000, dport=80, flags="S")
    syn.time = T0 + 0.123456789
    path = tmp_path / "c.pcap"
    with PcapWriter(str(path), endianness=endianness, nano=nano) as writer:
        writer.write(syn)
    flows, _, _ = read(path, bpf=bpf)
    assert [f.dst_port for f in flows] == [80]
    assert flows[0].ts == pytest.approx(T0 + (0.123456789 if nano else 0.123456), abs=1e-6)


def test_pcapng_interfaces_with_different_link_types(tmp_path: Path) -> None:
    eth = handshake(CLIENT, SERVER, 46000, 80)
    cooked = [at(CookedLinuxV2() / p[IP], float(p.time) - T0 + 1) for p in handshake(CLIENT, EXTERNAL, 46001, 443)]
    for p in eth:
        p.sniffed_on = "eth0"
    for p in cooked:
        p.sniffed_on = "any"
    path = tmp_path / "multi.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for p in sorted([*eth, *cooked], key=lambda p: p.time):
            writer.write(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flows, _, result = read(path, bpf=HAVE_TCPDUMP)
    assert sorted((f.dst_ip, f.dst_port) for f in flows) == [(SERVER, 80), (EXTERNAL, 443)]
    assert result.stats.packets_read == len(eth) + len(cooked)
    if HAVE_TCPDUMP:  # libpcap reads one link type per file: the read falls back to Python, and says so
        assert any(issubclass(w.category, CaptureWarning) and "tcpdump" in str(w.message) for w in caught)
        assert result.stats.bpf_filter is None


def _ng_block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(endian + "II", btype, len(body) + 12) + body + struct.pack(endian + "I", len(body) + 12)


def _ng_idb(endian: str, linktype: int, tsresol: int | None, snaplen: int = 0) -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack(endian + "HHB3x", 9, 1, tsresol) + struct.pack(endian + "HH", 0, 0)
    return _ng_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + options)


def _ng_epb(endian: str, iface: int, units: int, frame: bytes) -> bytes:
    head = struct.pack(endian + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
    return _ng_block(endian, 6, head + frame)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_tsresol_simple_packets_and_unknown_blocks(tmp_path: Path, bpf: bool, endian: str) -> None:
    nano_syn = bytes(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=47000, dport=80, flags="S"))
    binary_syn = bytes(IP(src=CLIENT, dst=EXTERNAL) / TCP(sport=47001, dport=443, flags="S"))
    simple_syn = bytes(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=47002, dport=8080, flags="S"))
    data = b"".join([
        _ng_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
        _ng_idb(endian, 1, 9),  # interface 0: Ethernet, nanoseconds
        _ng_idb(endian, 101, 0x80 | 20),  # interface 1: raw IP, 2^-20 s units
        _ng_block(endian, 0x0BAD, b"custom block we must skip"),
        _ng_epb(endian, 0, int((T0 + 0.5) * 1e9), nano_syn),
        _ng_epb(endian, 1, int((T0 + 2.25) * 2**20), binary_syn),
        _ng_block(endian, 3, struct.pack(endian + "I", len(simple_syn)) + simple_syn),  # SPB: interface 0
    ])
    path = tmp_path / "hand.pcapng"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaptureWarning)  # mixed link types: the BPF path falls back
        flows, _, result = read(path, bpf=bpf)
    by_port = {f.dst_port: f for f in flows}
    assert set(by_port) == {80, 443, 8080}
    assert by_port[80].ts == pytest.approx(T0 + 0.5, abs=1e-6)
    assert by_port[443].ts == pytest.approx(T0 + 2.25, abs=1e-6)
    assert by_port[443].dst_ip == EXTERNAL
    assert result.stats.packets_read == 3


# --- errors -------------------------------------------------------------------------------------


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    path.write_text('{"src_ip": "10.0.0.1"}\n')
    with pytest.raises(CaptureError, match=r"flows\.jsonl: not a pcap or pcapng file") as info:
        read_capture(str(path))
    assert isinstance(info.value, InputError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"nope\.pcap: cannot read capture"):
        read_capture(str(tmp_path / "nope.pcap"))


def test_truncated_file_header(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00")
    with pytest.raises(CaptureError, match=r"short\.pcap: truncated pcap file header"):
        read_capture(str(path))


def test_truncated_last_packet_names_packet_and_offset(tmp_path: Path, bpf: bool) -> None:
    packets = handshake(CLIENT, SERVER, 48000, 80)
    full = write(tmp_path, packets).read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(full[:-10])
    last_offset = len(full) - 16 - len(packets[-1])
    with pytest.raises(CaptureError) as info:
        list(read_capture(str(path), bpf=bpf).records)
    assert str(info.value) == (f"{path}: packet {len(packets)} (byte offset {last_offset}): "
                               f"file ends {16 + len(packets[-1]) - 10} bytes into the packet record")


def test_unknown_link_type(tmp_path: Path) -> None:
    path = write(tmp_path, [Raw(b"\x00" * 20)], linktype=147)
    with pytest.raises(CaptureError, match=r"c\.pcap: file header: unsupported link type 147"):
        read_capture(str(path))


def test_pcapng_unknown_link_type_names_the_block(tmp_path: Path) -> None:
    path = tmp_path / "usb.pcapng"
    path.write_bytes(_ng_block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + _ng_idb("<", 189, None))
    expected = r"usb\.pcapng: interface block at byte offset 28: unsupported link type 189"
    with pytest.raises(CaptureError, match=expected):
        list(read_capture(str(path), bpf=False).records)


def test_corrupt_record_length(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(header + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 60) + b"\x00" * 60)
    with pytest.raises(CaptureError, match=r"packet 1 \(byte offset 24\): record header claims 2147483647"):
        list(read_capture(str(path), bpf=False).records)


def test_missing_tcpdump_warns_and_reads_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("netpol_gen.ingest.pcap._tcpdump", lambda: None)
    with pytest.warns(CaptureWarning, match="tcpdump is not installed"):
        flows, _, result = read(write(tmp_path, handshake(CLIENT, SERVER, 49000, 80)))
    assert len(flows) == 1 and result.stats.bpf_filter is None and flows[0].packets == 8


# --- DNS ----------------------------------------------------------------------------------------


def dns_response(client: str, sport: int, t: float, answers: list[DNSRR], qname: str = "api.example.com",
                 tcp: bool = False) -> Packet:
    msg = DNS(id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname), an=answers)
    if tcp:
        raw = bytes(msg)
        return at(Ether() / IP(src="10.96.0.10", dst=client) / TCP(sport=53, dport=sport, flags="PA")
                  / Raw(struct.pack("!H", len(raw)) + raw), t)
    return at(Ether() / IP(src="10.96.0.10", dst=client) / UDP(sport=53, dport=sport) / msg, t)


CHAIN = [
    DNSRR(rrname="api.example.com", type="CNAME", rdata="api.edge.example.net", ttl=300),
    DNSRR(rrname="api.edge.example.net", type="CNAME", rdata="lb-7.cdn.example.org", ttl=120),
    DNSRR(rrname="lb-7.cdn.example.org", type="A", rdata="93.184.216.34", ttl=60),
    DNSRR(rrname="lb-7.cdn.example.org", type="AAAA", rdata="2606:2800:220:1::1", ttl=600),
]


def test_dns_cname_chain_maps_every_name_to_the_addresses(tmp_path: Path, bpf: bool) -> None:
    query = at(Ether() / IP(src=CLIENT, dst="10.96.0.10") / UDP(sport=33000, dport=53)
               / DNS(id=7, rd=1, qd=DNSQR(qname="api.example.com")), 0.0)
    flows, answers, result = read(write(tmp_path, [query, dns_response(CLIENT, 33000, 0.01, CHAIN)]), bpf=bpf)
    got = {(a.name, a.address, a.ttl) for a in answers}
    assert got == {
        ("lb-7.cdn.example.org", "93.184.216.34", 60),
        ("api.edge.example.net", "93.184.216.34", 60),
        ("api.example.com", "93.184.216.34", 60),
        ("lb-7.cdn.example.org", "2606:2800:220:1::1", 600),
        ("api.edge.example.net", "2606:2800:220:1::1", 120),  # shortest TTL on the chain
        ("api.example.com", "2606:2800:220:1::1", 120),
    }
    assert all(a.ts == pytest.approx(T0 + 0.01) for a in answers)
    assert [(f.src_ip, f.dst_ip, f.dst_port, f.packets) for f in flows] == [(CLIENT, "10.96.0.10", 53, 2)]
    assert result.stats.dns_answers == 6


def test_dns_over_tcp_whole_and_split_messages(tmp_path: Path, bpf: bool) -> None:
    whole = dns_response(CLIENT, 34000, 0.0, CHAIN[2:3], qname="lb-7.cdn.example.org", tcp=True)
    split = dns_response(CLIENT, 34001, 1.0, CHAIN, tcp=True)
    split[Raw].load = split[Raw].load[:40]  # the rest would come in the next segment
    _, answers, result = read(write(tmp_path, [whole, split]), bpf=bpf)
    assert [(a.name, a.address) for a in answers] == [("lb-7.cdn.example.org", "93.184.216.34")]
    assert result.stats.dns_tcp_split == 1 and result.stats.dns_malformed == 0


def test_dns_garbage_truncation_and_pointer_loops_are_counted(tmp_path: Path, bpf: bool) -> None:
    good = bytes(DNS(id=1, qr=1, qd=DNSQR(qname="ok.example.com"),
                     an=[DNSRR(rrname="ok.example.com", type="A", rdata="10.1.2.3")]))
    loop = bytearray(good)
    loop[12:14] = b"\xc0\x0c"  # the question name points at itself
    bad = [b"\xff" * 7, good[:-3], bytes(loop), bytes(DNS(id=2, qr=0, qd=DNSQR(qname="q.example.com")))]
    packets = [at(Ether() / IP(src="10.96.0.10", dst=CLIENT) / UDP(sport=53, dport=35000 + i) / Raw(m), i)
               for i, m in enumerate([*bad, good])]
    _, answers, result = read(write(tmp_path, packets), bpf=bpf)
    assert [(a.name, a.address) for a in answers] == [("ok.example.com", "10.1.2.3")]
    assert result.stats.dns_malformed == len(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_dns_parser_never_raises(message: bytes) -> None:
    answers = parse_response(b"\x00\x01\x81\x80" + message, T0)
    assert answers is None or all(isinstance(a, DnsAnswer) for a in answers)
