"""Read pcap/pcapng captures into connection flows and DNS answers (``netpol-gen import --pcap``).

Speed comes from not looking at most packets: a flow is decided by its handshake, so when tcpdump is
installed the capture is piped through ``tcpdump -r - -w - <filter>`` whose compiled BPF filter passes
only TCP SYN/FIN/RST, TCP port-53 segments with payload (DNS responses), all UDP (a UDP request
can only be told from a reply by tracking every datagram) and IPv6 with extension headers (BPF
cannot walk them). The rest never reaches Python; TCP flows then carry no packet/byte counts, as
only their handshake was seen. Without tcpdump (or with ``bpf=False``, or a pcapng whose
interfaces libpcap cannot read as one stream) every packet is read here, with a warning when a
filter was asked for.

The file formats are parsed here rather than with scapy's readers: a plain loop of ``struct``
unpacks over large buffers is several times faster, and an error can name the packet number and
byte offset. A truncated last packet is an error, not a warning: the store imports transactionally,
and a capture cut mid-packet is more often a copy still in progress than a finished one.

DNS over TCP: a response is parsed when it is complete in one segment (2-byte length prefix); a
message split over segments is counted in ``dns_tcp_split`` and skipped (no stream reassembly).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from netpol_gen.errors import CaptureError
from netpol_gen.ingest.decode import DECODERS, FIXED_IPV4, LINKTYPE_ETHERNET, PROTO_TCP, PROTO_UDP, Decoder
from netpol_gen.ingest.dns import DnsAnswer, parse_response
from netpol_gen.ingest.flowtrack import FlowTracker, Hints, ResolvedFlow
from netpol_gen.model.flows import Flow

_CHUNK = 1 << 20
# libpcap refuses records larger than this; a bigger length means a corrupt record header.
_MAX_RECORD = 1 << 18
_PCAP_MAGICS = {  # first four bytes -> (byte order, seconds per fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM = 0x1A2B3C4D
_BLOCK_IDB, _BLOCK_PB, _BLOCK_SPB, _BLOCK_EPB, _BLOCK_SHB = 1, 2, 3, 6, 0x0A0D0D0A
_OPT_TSRESOL, _OPT_TSOFFSET = 9, 14

_BPF_IP = (
    "udp"
    " or (ip and (tcp[13] & 7 != 0"
    " or (tcp src port 53 and ip[2:2] > ((ip[0] & 0xf) << 2) + ((tcp[12] & 0xf0) >> 2))))"
    " or (ip6 and ((ip6[6] = 6 and (ip6[53] & 7 != 0"
    " or (ip6[40:2] = 53 and ip6[4:2] > ((ip6[52] & 0xf0) >> 2))))"
    " or ip6[6] = 0 or ip6[6] = 43 or ip6[6] = 44 or ip6[6] = 60 or ip6[6] = 51))"
)

Packet = tuple[float, int, bytes]  # timestamp, link type, frame bytes
Record = Flow | ResolvedFlow | DnsAnswer


class CaptureWarning(UserWarning):
    """The capture is read, but slower or less completely than asked (e.g. no BPF filter)."""


@dataclass
class CaptureStats:
    """What a read saw; filled in as the records are consumed.

    ``packets_read`` is None when tcpdump filtered the file (it does not report how many it read);
    ``packets_filtered_in`` reached Python, ``packets_ignored`` of those were not TCP/UDP over IP or
    were non-first fragments, ``packets_short`` were cut by the snap length inside a header.
    ``bpf_filter`` is the filter that ran, None when every packet was read in Python.
    """

    packets_read: int | None = 0
    packets_filtered_in: int = 0
    packets_ignored: int = 0
    packets_short: int = 0
    flows: int = 0
    direction_unknown: int = 0
    direction_resolved: int = 0  # seen without handshake, initiator named by a dump's hints
    dns_answers: int = 0
    dns_malformed: int = 0
    dns_tcp_split: int = 0
    bpf_filter: str | None = None


@dataclass
class CaptureResult:
    """``records`` yields flows (as their connection ends), flows a dump resolved, and DNS answers, in
    one pass over the file."""

    records: Iterator[Record]
    stats: CaptureStats = field(default_factory=CaptureStats)


def _where(name: str, number: int, offset: int) -> str:
    return f"{name}: packet {number} (byte offset {offset})"


class _Buffer:
    """A read buffer over a file or pipe that knows the file offset of its first byte."""

    def __init__(self, stream: IO[bytes], data: bytes, base: int) -> None:
        self.stream = stream
        self.data = data
        self.base = base

    def refill(self, off: int) -> bool:
        """Drop ``data[:off]`` and append the next chunk; False at end of file."""
        more = self.stream.read(_CHUNK)
        if not more:
            return False
        self.data = self.data[off:] + more
        self.base += off
        return True


def _read_header(stream: IO[bytes], name: str, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise CaptureError(f"truncated {what}: {len(data)} of {size} bytes", where=name)
    return data


def _check_linktype(linktype: int, where: str) -> int:
    if linktype not in DECODERS:
        supported = ", ".join(str(k) for k in sorted(DECODERS))
        raise CaptureError(f"unsupported link type {linktype} (supported: {supported})", where=where)
    return linktype


class _PcapReader:
    """Classic pcap: a 24-byte file header, then 16-byte record headers each followed by a frame."""

    def __init__(self, stream: IO[bytes], name: str, magic: bytes) -> None:
        header = magic + _read_header(stream, name, 20, "pcap file header")
        self.endian, self.scale = _PCAP_MAGICS[magic]
        linktype = struct.unpack(self.endian + "I", header[20:24])[0] & 0xFFFF  # upper bits: FCS info
        self.linktype = _check_linktype(linktype, f"{name}: file header")
        self.stream, self.name = stream, name
        self.count = 0

    def __iter__(self) -> Iterator[Packet]:
        record = struct.Struct(self.endian + "IIII").unpack_from
        buf = _Buffer(self.stream, self.stream.read(_CHUNK), 24)
        linktype, scale, off = self.linktype, self.scale, 0
        while True:
            data, end = buf.data, len(buf.data)
            while off + 16 <= end:
                sec, frac, caplen, _ = record(data, off)
                nxt = off + 16 + caplen
                if caplen > _MAX_RECORD:
                    raise CaptureError(f"record header claims {caplen} captured bytes; the file is corrupt",
                                       where=_where(self.name, self.count + 1, buf.base + off))
                if nxt > end:
                    break
                self.count += 1
                yield sec + frac * scale, linktype, data[off + 16 : nxt]
                off = nxt
            if not buf.refill(off):
                if off < end:
                    raise CaptureError(f"file ends {end - off} bytes into the packet record",
                                       where=_where(self.name, self.count + 1, buf.base + off))
                return
            off = 0


def _block_structs(endian: str) -> tuple[struct.Struct, struct.Struct, struct.Struct]:
    """Block header, EPB and obsolete-PB layouts for one section's byte order."""
    return struct.Struct(endian + "II"), struct.Struct(endian + "IIIII"), struct.Struct(endian + "HHIII")


class _PcapNgReader:
    """pcapng: sections (SHB) of interfaces (IDB, each with its link type and timestamp unit) and
    packets (EPB, SPB, and the obsolete PB); other blocks are skipped."""

    def __init__(self, stream: IO[bytes], name: str, magic: bytes) -> None:
        self.stream, self.name = stream, name
        self.first = magic + stream.read(_CHUNK)
        self.endian = self._section_endian(self.first, 0)
        self.linktype = self._first_linktype()
        self.count = 0

    def _section_endian(self, data: bytes, off: int) -> str:
        if len(data) - off < 12:
            raise CaptureError("truncated pcapng section header", where=f"{self.name}: byte offset {off}")
        for endian in "<>":
            if struct.unpack_from(endian + "I", data, off + 8)[0] == _PCAPNG_BOM:
                return endian
        raise CaptureError("pcapng section header has no valid byte-order magic",
                           where=f"{self.name}: byte offset {off}")

    def _first_linktype(self) -> int | None:
        """The first interface's link type, if its IDB is in the first chunk (it picks the BPF dialect)."""
        header = struct.Struct(self.endian + "II")
        off = 0
        while off + 16 <= len(self.first):
            btype, blen = header.unpack_from(self.first, off)
            if btype == _BLOCK_IDB:
                return struct.unpack_from(self.endian + "H", self.first, off + 8)[0]
            if blen < 12:
                return None
            off += blen
        return None

    def _interface(self, data: bytes, off: int, blen: int) -> tuple[int, float, float, int]:
        """Parse an IDB: (link type, seconds per timestamp unit, timestamp offset, snap length)."""
        linktype, _, snaplen = struct.unpack_from(self.endian + "HHI", data, off + 8)
        _check_linktype(linktype, f"{self.name}: interface block at byte offset {off}")
        resolution, tsoffset = 1e-6, 0.0
        opt, end = off + 16, off + blen - 4
        while opt + 4 <= end:
            code, length = struct.unpack_from(self.endian + "HH", data, opt)
            if code == 0:
                break
            if code == _OPT_TSRESOL and length >= 1:
                value = data[opt + 4]
                resolution = 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
            elif code == _OPT_TSOFFSET and length >= 8:
                tsoffset = float(struct.unpack_from(self.endian + "q", data, opt + 4)[0])
            opt += 4 + ((length + 3) & ~3)
        return linktype, resolution, tsoffset, snaplen

    def __iter__(self) -> Iterator[Packet]:
        buf = _Buffer(self.stream, self.first, 0)
        interfaces: list[tuple[int, float, float, int]] = []
        endian = self.endian
        block, epb, pb = _block_structs(endian)
        off = 0
        while True:
            data, end = buf.data, len(buf.data)
            while off + 12 <= end:
                where = buf.base + off
                if data[off : off + 4] == _PCAPNG_SHB:
                    endian = self._section_endian(data, off)
                    block, epb, pb = _block_structs(endian)
                btype, blen = block.unpack_from(data, off)
                if blen < 12 or blen % 4:
                    raise CaptureError(f"invalid block length {blen}",
                                       where=f"{self.name}: byte offset {where}")
                nxt = off + blen
                if nxt > end:
                    break
                if btype == _BLOCK_EPB:
                    iface, high, low, caplen, _ = epb.unpack_from(data, off + 8)
                    packet = off + 28
                elif btype == _BLOCK_SPB:
                    iface, high, low, packet = 0, 0, 0, off + 12
                    caplen = min(block.unpack_from(data, off + 4)[1], blen - 16)
                elif btype == _BLOCK_PB:
                    iface, _, high, low, caplen = pb.unpack_from(data, off + 8)
                    packet = off + 28
                else:
                    if btype == _BLOCK_SHB:
                        interfaces = []
                    elif btype == _BLOCK_IDB:
                        interfaces.append(self._interface(data, off, blen))
                    off = nxt
                    continue
                self.count += 1
                if iface >= len(interfaces):
                    raise CaptureError(f"packet on interface {iface}, but the section defines "
                                       f"{len(interfaces)}", where=_where(self.name, self.count, where))
                linktype, resolution, tsoffset, snaplen = interfaces[iface]
                if btype == _BLOCK_SPB and snaplen:
                    caplen = min(caplen, snaplen)
                if packet + caplen > nxt:
                    raise CaptureError(f"captured length {caplen} exceeds its block",
                                       where=_where(self.name, self.count, where))
                yield ((high << 32) | low) * resolution + tsoffset, linktype, data[packet : packet + caplen]
                off = nxt
            if not buf.refill(off):
                if off < end:
                    raise CaptureError(f"file ends {end - off} bytes into a block",
                                       where=_where(self.name, self.count + 1, buf.base + off))
                return
            off = 0


def open_packets(stream: IO[bytes], name: str) -> _PcapReader | _PcapNgReader:
    """Read the file header and return an iterable of :data:`Packet`; CaptureError if it is no capture."""
    magic = stream.read(4)
    if magic in _PCAP_MAGICS:
        return _PcapReader(stream, name, magic)
    if magic == _PCAPNG_SHB:
        return _PcapNgReader(stream, name, magic)
    raise CaptureError(f"not a pcap or pcapng file (starts with {magic.hex() or 'nothing'})", where=name)


def bpf_filter(linktype: int | None) -> str:
    """The tcpdump filter that passes every packet that can start, end or name a flow (see module doc).

    libpcap supports the ``vlan`` keyword only on Ethernet, so tagged frames are matched only there.
    """
    if linktype != LINKTYPE_ETHERNET:
        return _BPF_IP
    return f"({_BPF_IP}) or (vlan and (({_BPF_IP}) or (vlan and ({_BPF_IP}))))"


def _tcpdump() -> str | None:
    return shutil.which("tcpdump", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


class _TcpdumpFailed(Exception):
    """tcpdump exited non-zero; the argument is its stderr."""


def _filtered(path: str, tcpdump: str, bpf: str, tracker: FlowTracker, stats: CaptureStats) -> Iterator[Record]:
    """The records of the packets of ``path`` that pass ``bpf``, via ``tcpdump -r - -w -``.

    The file goes in on stdin, so tcpdump's privilege drop or an AppArmor profile cannot stop it from
    opening the path.
    """
    command = [tcpdump, "-n", "-r", "-", "-w", "-", "--time-stamp-precision=nano", bpf]
    with open(path, "rb") as source, subprocess.Popen(
        command, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            yield from _tracked(open_packets(proc.stdout, path), tracker, stats)
        except CaptureError:
            # tcpdump stopping mid-record is reported by its exit status and message, below.
            proc.stdout.close()
            if not proc.wait():
                raise
        proc.stdout.close()
        if proc.wait():
            lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise _TcpdumpFailed(lines[-1] if lines else f"exit status {proc.returncode}")


def dns_over_tcp_answers(payload: bytes, ts: float, stats: CaptureStats) -> Iterator[DnsAnswer]:
    """Parse the length-prefixed DNS messages that are complete in this segment."""
    off = 0
    while off + 2 <= len(payload):
        size = (payload[off] << 8) | payload[off + 1]
        if off + 2 + size > len(payload):
            stats.dns_tcp_split += 1
            return
        yield from dns_answers(payload[off + 2 : off + 2 + size], ts, stats)
        off += 2 + size


def dns_answers(message: bytes, ts: float, stats: CaptureStats) -> list[DnsAnswer]:
    """The answers of one DNS message, counted in ``stats`` (a malformed one counts and gives none)."""
    answers = parse_response(message, ts)
    if answers is None:
        stats.dns_malformed += 1
        return []
    stats.dns_answers += len(answers)
    return answers


def _frame(ts: float, frame: bytes, decoder: Decoder, tracker: FlowTracker, stats: CaptureStats
           ) -> Iterable[DnsAnswer]:
    """Decode one frame the layered way, track it, and return the DNS answers it carries."""
    try:
        decoded = decoder(frame)
    except (struct.error, IndexError):
        stats.packets_short += 1
        return ()
    if decoded is None:
        stats.packets_ignored += 1
        return ()
    proto, _, _, sport, _, flags, seq, ack, payload, end, ip_len, key = decoded
    if proto == PROTO_TCP:
        tracker.tcp(ts, key, flags, seq, ack, ip_len)
        if sport == 53 and end > payload:
            return list(dns_over_tcp_answers(frame[payload:end], ts, stats))
    else:
        tracker.udp(ts, key, ip_len)
        if sport == 53:
            return dns_answers(frame[payload:end], ts, stats)
    return ()


def _take(tracker: FlowTracker) -> Iterator[Record]:
    """The flows the tracker finished since the last take."""
    yield from tracker.done
    yield from tracker.resolved
    tracker.done.clear()
    tracker.resolved.clear()


def _finish(tracker: FlowTracker, stats: CaptureStats) -> Iterator[Record]:
    """End of the capture: what the tracker still holds; its counts into ``stats``."""
    tracker.flush()
    _counts(tracker, stats)
    return _take(tracker)


def _counts(tracker: FlowTracker, stats: CaptureStats) -> None:
    stats.flows = tracker.stats.flows
    stats.direction_unknown = tracker.stats.direction_unknown
    stats.direction_resolved = tracker.stats.resolved


def _process(packets: Iterable[Packet], tracker: FlowTracker, stats: CaptureStats) -> Iterator[Record]:
    """The per-packet loop over any reader: decode, track, parse DNS from port 53; yield flows as they
    finish (those still tracked at the end are :func:`_finish`'s)."""
    done, resolved = tracker.done, tracker.resolved
    seen = 0
    try:
        for ts, linktype, frame in packets:
            seen += 1
            yield from _frame(ts, frame, DECODERS[linktype], tracker, stats)
            if done or resolved:
                yield from _take(tracker)
    finally:
        stats.packets_filtered_in += seen
        _counts(tracker, stats)


def _process_pcap(reader: _PcapReader, tracker: FlowTracker, stats: CaptureStats) -> Iterator[Record]:
    """:func:`_process` for a classic pcap of a link type with a :class:`FixedIPv4` layout, in one loop
    over the read buffer: the hot path.

    Almost every frame is untagged IPv4 without options: its headers are read with the link type's
    :class:`FixedIPv4` layout straight from the buffer (no frame cut out, no decoder call, no
    per-packet generator); any other frame goes through :func:`_frame`. The records and counts are
    :func:`_process`'s.
    """
    decoder, fixed = DECODERS[reader.linktype], FIXED_IPV4[reader.linktype]
    headers, fits, need, l3 = fixed.layout.unpack_from, fixed.fits, fixed.layout.size, fixed.l3
    tcp, udp, done, resolved = tracker.tcp, tracker.udp, tracker.done, tracker.resolved
    record = struct.Struct(reader.endian + "IIII").unpack_from
    scale, name = reader.scale, reader.name
    buf = _Buffer(reader.stream, reader.stream.read(_CHUNK), 24)
    off = seen = ignored = 0
    try:
        while True:
            data, end = buf.data, len(buf.data)
            while off + 16 <= end:
                sec, frac, caplen, _ = record(data, off)
                start = off + 16
                nxt = start + caplen
                if caplen > _MAX_RECORD:
                    raise CaptureError(f"record header claims {caplen} captured bytes; the file is corrupt",
                                       where=_where(name, seen + 1, buf.base + off))
                if nxt > end:
                    break
                seen += 1
                off = nxt
                ts = sec + frac * scale
                if caplen >= need:
                    ethertype, vihl, total, frag, proto, key, seq, ack, offset, flags = headers(data, start)
                    if fits(ethertype, vihl, frag):
                        ip = start + l3
                        if not total:  # as in decode._ipv4: TCP segmentation offload
                            total = caplen - l3
                        if proto == PROTO_TCP:
                            tcp(ts, key, flags, seq, ack, total)
                            if key[8] == 0 and key[9] == 53:  # source port 53: DNS over TCP
                                payload, ip_end = ip + 20 + ((offset >> 4) << 2), ip + total
                                if ip_end > payload:
                                    yield from dns_over_tcp_answers(data[payload : min(ip_end, nxt)], ts, stats)
                        elif proto == PROTO_UDP:
                            udp(ts, key, total)
                            if key[8] == 0 and key[9] == 53:
                                yield from dns_answers(data[ip + 28 : min(ip + total, nxt)], ts, stats)
                        else:
                            ignored += 1
                        if done or resolved:
                            yield from _take(tracker)
                        continue
                yield from _frame(ts, data[start:nxt], decoder, tracker, stats)
                if done or resolved:
                    yield from _take(tracker)
            if not buf.refill(off):
                if off < end:
                    raise CaptureError(f"file ends {end - off} bytes into the packet record",
                                       where=_where(name, seen + 1, buf.base + off))
                break
            off = 0
    finally:
        reader.count = seen
        stats.packets_filtered_in += seen
        stats.packets_ignored += ignored
        _counts(tracker, stats)


def _tracked(reader: _PcapReader | _PcapNgReader, tracker: FlowTracker, stats: CaptureStats) -> Iterator[Record]:
    if isinstance(reader, _PcapReader) and reader.linktype in FIXED_IPV4:
        return _process_pcap(reader, tracker, stats)
    return _process(reader, tracker, stats)


def _reset(stats: CaptureStats) -> None:
    for name, value in vars(CaptureStats()).items():
        setattr(stats, name, value)


def _records(path: str, stream: IO[bytes], reader: _PcapReader | _PcapNgReader, tcpdump: str | None,
             stats: CaptureStats, udp_timeout: float, tcp_timeout: float, hints: Hints | None
             ) -> Iterator[Record]:
    with stream:
        if tcpdump is not None:
            stats.bpf_filter, stats.packets_read = bpf_filter(reader.linktype), None
            tracker = FlowTracker(udp_timeout=udp_timeout, tcp_timeout=tcp_timeout, count_tcp=False, hints=hints)
            started = False
            try:
                for record in _filtered(path, tcpdump, stats.bpf_filter, tracker, stats):
                    started = True
                    yield record
                yield from _finish(tracker, stats)
                return
            except _TcpdumpFailed as exc:
                for _ in reader:  # a broken file: our reader names the packet and offset
                    pass
                if started:
                    raise CaptureError(f"tcpdump failed after part of the capture was read: {exc}",
                                       where=path) from None
                warnings.warn(CaptureWarning(f"{path}: tcpdump cannot read it ({exc}); "
                                             "reading every packet in Python, without a BPF filter"),
                              stacklevel=2)
            _reset(stats)
            stream.seek(0)
            reader = open_packets(stream, path)
        tracker = FlowTracker(udp_timeout=udp_timeout, tcp_timeout=tcp_timeout, hints=hints)
        try:
            yield from _tracked(reader, tracker, stats)
            yield from _finish(tracker, stats)
        finally:
            stats.packets_read = reader.count


def read_capture(path: str, *, bpf: bool = True, udp_timeout: float = 120.0,
                 tcp_timeout: float = 3600.0, hints: Hints | None = None) -> CaptureResult:
    """Open a pcap/pcapng capture; iterate ``records`` to read it (once), then look at ``stats``.

    ``hints`` (from dumps of open connections, :func:`netpol_gen.ingest.dumps.direction_hints`)
    resolve the connections seen without a handshake.

    The file header is checked now (CaptureError if it is no capture or of an unsupported link
    type); packet errors are raised while iterating. ``bpf=True`` filters with tcpdump when it is
    installed and warns (:class:`CaptureWarning`) when it is not.
    """
    try:
        stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the records generator
    except OSError as exc:
        raise CaptureError(f"cannot read capture: {exc.strerror}", where=path) from None
    try:
        reader = open_packets(stream, path)
    except BaseException:
        stream.close()
        raise
    tcpdump = _tcpdump() if bpf else None
    if bpf and tcpdump is None:
        warnings.warn(CaptureWarning(f"{path}: tcpdump is not installed; reading every packet in Python "
                                     "(install tcpdump for a BPF-filtered read)"), stacklevel=2)
    stats = CaptureStats()
    return CaptureResult(_records(path, stream, reader, tcpdump, stats, udp_timeout, tcp_timeout, hints), stats)
