"""The one-struct decoder of untagged option-less IPv4 frames gives the layered decoders' answer for every frame."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_gen.ingest import decode

LAYERED = {decode.LINKTYPE_ETHERNET: (decode._ethernet, 12), decode.LINKTYPE_LINUX_SLL: (decode._sll, 14),
           decode.LINKTYPE_LINUX_SLL2: (decode._sll2, 0)}


def answer(decoder: decode.Decoder, frame: bytes) -> object:
    try:
        return decoder(frame)
    except (struct.error, IndexError):  # what the capture reader counts as a frame cut short
        return "short"


@settings(max_examples=500, deadline=None)
@given(linktype=st.sampled_from(sorted(LAYERED)), ethertype=st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x81\x00"]),
       vihl=st.sampled_from([0x45, 0x46, 0x44, 0x65]), proto=st.sampled_from([6, 17, 1]),
       frag=st.sampled_from([b"\x40\x00", b"\x00\x10", b"\x20\x00"]),
       total=st.sampled_from([b"\x00\x00", b"\x00\x30"]),
       rest=st.binary(max_size=64))
def test_fixed_offsets_agree_with_layered_decoders(linktype: int, ethertype: bytes, vihl: int, proto: int,
                                                   frag: bytes, total: bytes, rest: bytes) -> None:
    layered, ethertype_at = LAYERED[linktype]
    l3 = {12: 14, 14: 16, 0: 20}[ethertype_at]
    link = bytearray(l3)
    link[ethertype_at : ethertype_at + 2] = ethertype
    addresses = bytes([10, 0, 0, 1, 10, 0, 0, 2])
    ip = bytes([vihl, 0]) + total + b"\x00\x01" + frag + bytes([64, proto]) + b"\x00\x00" + addresses
    frame = bytes(link) + ip + rest
    for cut in (len(frame), l3 + 20 + min(len(rest), 8), l3 + 10):
        assert answer(decode.DECODERS[linktype], frame[:cut]) == answer(layered, frame[:cut])
