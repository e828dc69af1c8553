"""Header parsing for captured frames: link layer, VLAN tags, IPv4/IPv6, TCP/UDP, by ``struct`` alone.

Scapy's per-packet dissection runs at a few thousand packets a second; a capture has millions, so
each header is read with a precompiled ``struct.Struct`` straight from the frame bytes. A decoder
returns a plain tuple (:data:`Decoded`) rather than an object: it is built once per packet on the
hot path, and the flow tracker only unpacks it. ``None`` means "not TCP/UDP over IP" (ARP, ICMP, a
non-first fragment); a frame cut short by the snap length raises ``struct.error`` or ``IndexError``,
which the caller catches once per packet instead of every header checking its length.

Nearly every frame is untagged IPv4 without options carrying TCP or UDP: for those, one ``struct``
reads the link header's ethertype, the IPv4 header and the transport header at fixed offsets in one
call (:class:`FixedIPv4`, which the pcap reader also applies straight to its read buffer, frame by
frame, without cutting the frame out), and the layered decoders below run only for the other frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW as some BSDs and old libpcaps numbered it in files.
LINKTYPE_RAW_ALIASES = (12, 14)

PROTO_TCP = 6
PROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)
# IPv6 extension headers we walk: hop-by-hop, routing, destination options (length in 8-byte units).
_IPV6_EXT_8 = (0, 43, 60)
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_U16 = struct.Struct("!H")
# version/IHL, total length, flags/fragment offset, protocol, addresses (as ints: cheap dict keys)
_IPV4 = struct.Struct("!BxHxxHxBxxII")
_IPV6 = struct.Struct("!4xHB")  # payload length, next header
_IPV6_EXT = struct.Struct("!BB")  # next header, length
_IPV6_FRAG = struct.Struct("!BxH")  # next header, fragment offset/flags
_TCP = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags
_UDP = struct.Struct("!HH")
_IPV4_NO_OPTIONS = 0x45  # version 4, header length 20
_ENDS = struct.Struct("!IIHH")  # a connection key's addresses (IPv4) and ports

# An address is an int for IPv4 (hashes and compares faster than bytes) and 16 bytes for IPv6.
Address = int | bytes
# (protocol, src, dst, src port, dst port, TCP flags, TCP seq, TCP ack, payload offset in the frame,
#  end of the IP packet in the frame (may exceed the frame when cut by the snap length), IP length,
#  the connection key: both addresses and both ports as the headers hold them, see flowtrack.wire_key).
# Flags/seq/ack are 0 for UDP.
Decoded = tuple[int, Address, Address, int, int, int, int, int, int, int, int, bytes]
Decoder = Callable[[bytes], Decoded | None]


def _transport(
    frame: bytes, proto: int, src: Address, dst: Address, addresses: bytes, l4: int, end: int, ip_len: int
) -> Decoded | None:
    """``addresses``: the source and destination address as the IP header holds them (the key's start)."""
    if proto == PROTO_TCP:
        sport, dport, seq, ack, offset, flags = _TCP.unpack_from(frame, l4)
        return (proto, src, dst, sport, dport, flags, seq, ack, l4 + ((offset >> 4) << 2), end, ip_len,
                addresses + frame[l4 : l4 + 4])
    if proto == PROTO_UDP:
        sport, dport = _UDP.unpack_from(frame, l4)
        return proto, src, dst, sport, dport, 0, 0, 0, l4 + 8, end, ip_len, addresses + frame[l4 : l4 + 4]
    return None


def _ipv4(frame: bytes, off: int) -> Decoded | None:
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(frame, off)
    ihl = (vihl & 0x0F) << 2
    # Non-first fragments carry no transport header; the first fragment has the ports.
    if vihl >> 4 != 4 or ihl < 20 or frag & 0x1FFF:
        return None
    # A zero total length happens with TCP segmentation offload: the frame length is the truth.
    if not total:
        total = len(frame) - off
    return _transport(frame, proto, src, dst, frame[off + 12 : off + 20], off + ihl, off + total, total)


def _ipv6(frame: bytes, off: int) -> Decoded | None:
    payload_len, proto = _IPV6.unpack_from(frame, off)
    if frame[off] >> 4 != 6:
        return None
    src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
    end = l4 = off + 40
    end += payload_len
    while proto not in (PROTO_TCP, PROTO_UDP):
        if proto in _IPV6_EXT_8:
            nxt, length = _IPV6_EXT.unpack_from(frame, l4)
            l4 += (length + 1) << 3
        elif proto == _IPV6_FRAGMENT:
            nxt, frag = _IPV6_FRAG.unpack_from(frame, l4)
            if frag & 0xFFF8:
                return None
            l4 += 8
        elif proto == _IPV6_AH:
            nxt, length = _IPV6_EXT.unpack_from(frame, l4)
            l4 += (length + 2) << 2
        else:
            return None
        proto = nxt
    return _transport(frame, proto, src, dst, frame[off + 8 : off + 40], l4, end, 40 + payload_len)


def _network(frame: bytes, ethertype: int, off: int) -> Decoded | None:
    while ethertype in _ETHERTYPE_VLAN:
        ethertype = _U16.unpack_from(frame, off + 2)[0]
        off += 4
    if ethertype == _ETHERTYPE_IPV4:
        return _ipv4(frame, off)
    if ethertype == _ETHERTYPE_IPV6:
        return _ipv6(frame, off)
    return None


def _ethernet(frame: bytes) -> Decoded | None:
    return _network(frame, _U16.unpack_from(frame, 12)[0], 14)


def _sll(frame: bytes) -> Decoded | None:
    return _network(frame, _U16.unpack_from(frame, 14)[0], 16)


def _sll2(frame: bytes) -> Decoded | None:
    return _network(frame, _U16.unpack_from(frame, 0)[0], 20)


@dataclass(frozen=True)
class FixedIPv4:
    """Where one link type's untagged, option-less IPv4 frame keeps what the flow tracker reads.

    ``layout`` unpacks, from the frame's first byte: ethertype, IPv4 version/IHL, total length,
    flags/fragment offset, protocol, the connection key (addresses and ports, 12 bytes), then TCP's
    seq, ack, data offset and flags (for UDP those four are payload bytes, unused). ``l3`` is the IP
    header's offset. A frame shorter than ``layout.size`` (TCP's headers) is left to the layered decoders.
    """

    layout: struct.Struct
    l3: int

    @classmethod
    def at(cls, ethertype_at: int, l3: int) -> FixedIPv4:
        return cls(struct.Struct(f"!{ethertype_at}xH{l3 - ethertype_at - 2}xBxHxxHxBxx12sIIBB"), l3)

    def fits(self, ethertype: int, vihl: int, frag: int) -> bool:
        """True when the layout read the frame right: IPv4 without options, not a later fragment."""
        return ethertype == _ETHERTYPE_IPV4 and vihl == _IPV4_NO_OPTIONS and not frag & 0x1FFF


FIXED_IPV4 = {LINKTYPE_ETHERNET: FixedIPv4.at(12, 14), LINKTYPE_LINUX_SLL: FixedIPv4.at(14, 16),
              LINKTYPE_LINUX_SLL2: FixedIPv4.at(0, 20)}


def _fixed_ipv4(fixed: FixedIPv4, general: Decoder) -> Decoder:
    """A decoder that reads an untagged, option-less IPv4 frame's headers with one ``struct``
    (:class:`FixedIPv4`; TCP's layout: a UDP frame shorter than that, or any other frame, goes to
    ``general``, which gives the same answer for the rest)."""
    unpack, l3, fits = fixed.layout.unpack_from, fixed.l3, fixed.fits
    l4 = l3 + 20

    def decode(frame: bytes) -> Decoded | None:
        try:
            ethertype, vihl, total, frag, proto, key, seq, ack, offset, flags = unpack(frame)
        except struct.error:
            return general(frame)
        if not fits(ethertype, vihl, frag):
            return general(frame)
        if not total:  # as in _ipv4: TCP segmentation offload
            total = len(frame) - l3
        src, dst, sport, dport = _ENDS.unpack(key)
        if proto == PROTO_TCP:
            return proto, src, dst, sport, dport, flags, seq, ack, l4 + ((offset >> 4) << 2), l3 + total, total, key
        if proto == PROTO_UDP:
            return proto, src, dst, sport, dport, 0, 0, 0, l4 + 8, l3 + total, total, key
        return None

    return decode


def _raw(frame: bytes) -> Decoded | None:
    version = frame[0] >> 4
    if version == 4:
        return _ipv4(frame, 0)
    if version == 6:
        return _ipv6(frame, 0)
    return None


DECODERS: dict[int, Decoder] = {
    LINKTYPE_ETHERNET: _fixed_ipv4(FIXED_IPV4[LINKTYPE_ETHERNET], _ethernet),
    LINKTYPE_LINUX_SLL: _fixed_ipv4(FIXED_IPV4[LINKTYPE_LINUX_SLL], _sll),
    LINKTYPE_LINUX_SLL2: _fixed_ipv4(FIXED_IPV4[LINKTYPE_LINUX_SLL2], _sll2),
    LINKTYPE_RAW: _raw,
    **{alias: _raw for alias in LINKTYPE_RAW_ALIASES},
}

