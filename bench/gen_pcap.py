"""Generate a realistic pod-traffic pcap for benchmarking the pcap import: ``gen_pcap.py OUT [PACKETS]``.

Traffic between a few hundred pod IPs (10.244.x.y) and some external addresses: TCP connections
(handshake, request/response data, FIN teardown), DNS lookups to the cluster DNS with CNAME+A
answers, and other UDP. Frames are packed with ``struct`` (scapy would take minutes for 10^6
packets); checksums are left zero, which no reader here verifies.
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterator

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_RECORD = struct.Struct("<IIII")
_ETHER_IPV4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_SYN, _ACK, _FIN, _PSH = 0x02, 0x10, 0x01, 0x08
_DNS_SERVER = bytes([10, 96, 0, 10])


def _ip(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    return _ETHER_IPV4 + _IPV4.pack(0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst) + l4


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes) -> bytes:
    return _ip(src, dst, 6, _TCP.pack(sport, dport, seq, ack, 0x50, flags, 65535, 0, 0) + data)


def _udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    return _ip(src, dst, 17, _UDP.pack(sport, dport, 8 + len(data), 0) + data)


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def _dns_response(qid: int, name: str, alias: str, address: bytes) -> bytes:
    question = _dns_name(name) + b"\x00\x01\x00\x01"
    cname = b"\xc0\x0c\x00\x05\x00\x01" + struct.pack("!IH", 300, len(_dns_name(alias))) + _dns_name(alias)
    a_record = b"\xc0" + bytes([12 + len(question) + 12]) + b"\x00\x01\x00\x01" + struct.pack("!IH", 30, 4)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 2, 0, 0) + question + cname + a_record + address


def _connection(rng: random.Random, client: bytes, server: bytes, dport: int) -> Iterator[bytes]:
    sport, cseq, sseq = rng.randrange(32768, 61000), rng.getrandbits(32), rng.getrandbits(32)
    yield _tcp(client, server, sport, dport, cseq, 0, _SYN, b"")
    yield _tcp(server, client, dport, sport, sseq, cseq + 1, _SYN | _ACK, b"")
    yield _tcp(client, server, sport, dport, cseq + 1, sseq + 1, _ACK, b"")
    for _ in range(rng.randrange(1, 7)):
        request, response = rng.randrange(80, 600), rng.randrange(100, 1400)
        yield _tcp(client, server, sport, dport, cseq, sseq, _ACK | _PSH, bytes(request))
        yield _tcp(server, client, dport, sport, sseq, cseq, _ACK | _PSH, bytes(response))
        yield _tcp(client, server, sport, dport, cseq, sseq, _ACK, b"")
    yield _tcp(client, server, sport, dport, cseq, sseq, _FIN | _ACK, b"")
    yield _tcp(server, client, dport, sport, sseq, cseq, _FIN | _ACK, b"")
    yield _tcp(client, server, sport, dport, cseq, sseq, _ACK, b"")


def _lookup(rng: random.Random, client: bytes, external: bytes) -> Iterator[bytes]:
    sport, qid = rng.randrange(32768, 61000), rng.getrandbits(16)
    name = f"api{rng.randrange(50)}.example.com"
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + b"\x00\x01\x00\x01"
    yield _udp(client, _DNS_SERVER, sport, 53, query)
    yield _udp(_DNS_SERVER, client, 53, sport, _dns_response(qid, name, "edge.cdn.example.net", external))


def _datagrams(rng: random.Random, client: bytes, server: bytes) -> Iterator[bytes]:
    sport = rng.randrange(32768, 61000)
    for _ in range(rng.randrange(1, 5)):
        yield _udp(client, server, sport, 8125, bytes(rng.randrange(40, 200)))


def generate(path: str, count: int, seed: int = 1) -> int:
    """Write about ``count`` packets (whole conversations) to ``path``; return the number written."""
    rng = random.Random(seed)
    pods = [bytes([10, 244, rng.randrange(0, 8), rng.randrange(2, 250)]) for _ in range(400)]
    externals = [bytes([rng.randrange(1, 223), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])
                 for _ in range(40)]
    ports = [80, 443, 5432, 6379, 8080, 9090]
    written, ts = 0, 1_700_000_000.0
    pending: list[Iterator[bytes]] = []  # interleave several conversations, as on a real link
    with open(path, "wb") as out:
        out.write(_PCAP_HEADER)
        while written < count:
            while len(pending) < 32:
                kind = rng.random()
                client = rng.choice(pods)
                if kind < 0.70:
                    server = rng.choice(pods) if rng.random() < 0.8 else rng.choice(externals)
                    pending.append(_connection(rng, client, server, rng.choice(ports)))
                elif kind < 0.90:
                    pending.append(_lookup(rng, client, rng.choice(externals)))
                else:
                    pending.append(_datagrams(rng, client, rng.choice(pods)))
            index = rng.randrange(len(pending))
            frame = next(pending[index], None)
            if frame is None:
                pending.pop(index)
                continue
            ts += rng.expovariate(2000.0)
            out.write(_RECORD.pack(int(ts), int(ts % 1 * 1e6), len(frame), len(frame)) + frame)
            written += 1
    return written


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m bench.gen_pcap OUT [PACKETS]")
    written = generate(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 1_000_000)
    print(f"wrote {written} packets to {sys.argv[1]}")


if __name__ == "__main__":
    main()
