"""The flow record: one connection, ``src`` being its initiator, as JSONL on disk.

``check`` reads it, ``import`` stores it, the collector and the pcap reader produce it. One line:
``{"src_ip","src_port","dst_ip","dst_port","protocol","ts","packets","bytes","answered"}`` with
``src_port``, ``ts``, ``packets``, ``bytes`` and ``answered`` optional. ``"answered": false`` marks a
connection attempt never answered (a TCP SYN retransmitted without a SYN-ACK: an enforcement point or a
dead peer dropped it); it is still a connection, and absent means answered or not known.
``"dst_names": [...]``, also optional, are the DNS names ``dst_ip`` answered for when the flow was made
(what ``check`` judges Cilium ``toFQDNs`` with: :func:`names_in_flows`). A malformed line aborts the read
with its line number (``skip_bad=True`` counts and skips it instead).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import IO, Annotated, Any

import msgspec

from netpol_gen.errors import FlowError
from netpol_gen.model.bounds import AddressText, Count, DestinationPort, DnsName, Port, Seconds, horizon
from netpol_gen.model.dns import DnsAnswerSeen

PROTOCOLS = ("TCP", "UDP", "SCTP")
_new_object = object.__new__
MAX_LINE = 64 * 1024  # bytes: a flow record is ~150; the bound keeps a hostile file from filling memory
BLOCK_BYTES = 1 << 16  # read and decoded at a time by iter_record_blocks (a block's records fit in a core's cache)


@dataclass(frozen=True, slots=True)
class Flow:
    """One connection as seen on the wire: initiator ``src`` to responder ``dst`` on ``dst_port``."""

    src_ip: str
    dst_ip: str
    dst_port: int
    protocol: str
    src_port: int | None = None
    ts: float | None = None
    packets: int | None = None
    bytes: int | None = None
    answered: bool = True  # False: a SYN retransmitted and never answered (a drop by policy, or a dead peer)

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "src_ip": self.src_ip,
            "src_port": self.src_port,
            "dst_ip": self.dst_ip,
            "dst_port": self.dst_port,
            "protocol": self.protocol,
            "ts": self.ts,
            "packets": self.packets,
            "bytes": self.bytes,
            "answered": None if self.answered else False,
        }
        return json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":"))


# Flow's slots, set through their descriptors by make_flow (bound once, in field order).
(_set_src_ip, _set_dst_ip, _set_dst_port, _set_protocol, _set_src_port, _set_ts, _set_packets, _set_bytes,
 _set_answered) = (getattr(Flow, name).__set__ for name in Flow.__match_args__)


def make_flow(src_ip: str, dst_ip: str, dst_port: int, protocol: str, src_port: int | None, ts: float | None,
              packets: int | None, byte_count: int | None, answered: bool) -> Flow:
    """``Flow(...)`` with every field given, for the loops that make one per connection (the pcap
    reader). A frozen dataclass's ``__init__`` looks ``object.__setattr__`` up again for each field;
    this sets each slot through its descriptor, bound once: about a third less time, 8% of a pcap
    import's instructions. Flow has no ``__post_init__`` to skip; a test keeps both ways equal."""
    flow = _new_object(Flow)
    _set_src_ip(flow, src_ip)
    _set_dst_ip(flow, dst_ip)
    _set_dst_port(flow, dst_port)
    _set_protocol(flow, protocol)
    _set_src_port(flow, src_port)
    _set_ts(flow, ts)
    _set_packets(flow, packets)
    _set_bytes(flow, byte_count)
    _set_answered(flow, answered)
    return flow


@dataclass
class FlowReadStats:
    """What a read saw: lines read, flows returned, bad lines skipped (only with ``skip_bad``)."""

    lines: int = 0
    flows: int = 0
    skipped: int = 0


class FlowRecord(msgspec.Struct, frozen=True):
    """The declared schema of one JSONL line; fields other tools add are ignored."""

    src_ip: AddressText
    dst_ip: AddressText
    dst_port: DestinationPort
    protocol: Annotated[str, msgspec.Meta(pattern="^(?i:tcp|udp|sctp)$")]
    src_port: Port | None = None
    ts: Seconds | None = None
    packets: Count | None = None
    bytes: Count | None = None
    answered: bool = True
    dst_names: tuple[DnsName, ...] = ()


DECODER = msgspec.json.Decoder(FlowRecord)  # raises msgspec's errors; decode_record words them
_MISSING = re.compile(r"Object missing required field `(.+)`")


@lru_cache(maxsize=1 << 16)
def _parse_address(value: str) -> tuple[str, int] | None:
    """``value`` canonicalised and its IP version, or None if it is no address. Cached because a
    flow file names the same few thousand addresses millions of times and ``ipaddress`` is slow."""
    try:  # IPv4 in C: inet_pton reads (and refuses) what ipaddress does, inet_ntop writes its str()
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value)), 4
    except (OSError, ValueError):  # ValueError: a NUL in the text
        pass
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(address), address.version


def _canonical_ip(value: str, field: str) -> tuple[str, int]:
    parsed = _parse_address(value)
    if parsed is None:
        raise FlowError(f"{field}: {value!r} is not an IP address")
    return parsed


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def schema_problem(exc: msgspec.MsgspecError) -> str:
    """msgspec's message as ``field: what`` (``Expected `int` >= 1 - at `$.dst_port` `` ->
    ``dst_port: expected int >= 1``), the form every boundary error of netpol-gen takes."""
    text = str(exc)
    what, _, path = text.partition(" - at `$")
    path = path.rstrip("`").lstrip(".")
    missing = _MISSING.fullmatch(what)
    what = f"missing field {missing[1]!r}" if missing else _lower_first(what.replace("`", ""))
    return f"{path}: {what}" if path else what


def canonical_addresses(src: str, dst: str) -> tuple[str, str]:
    """A record's addresses canonicalised, checked to be addresses of one IP family (what the schema
    cannot say); FlowError names the field."""
    src_ip, src_version = _canonical_ip(src, "src_ip")
    dst_ip, dst_version = _canonical_ip(dst, "dst_ip")
    if src_version != dst_version:
        raise FlowError(f"src_ip {src_ip} and dst_ip {dst_ip} are of different IP families")
    return src_ip, dst_ip


def too_late(ts: float) -> FlowError:
    """The error for a timestamp after the horizon (:func:`netpol_gen.model.bounds.horizon`)."""
    return FlowError(f"ts: {ts} is more than a day in the future")


def flow_from_record(record: FlowRecord, latest: float) -> Flow:
    """A Flow from a decoded record, with what the schema cannot say checked: addresses, one IP
    family, no timestamp after ``latest``."""
    src_ip, dst_ip = canonical_addresses(record.src_ip, record.dst_ip)
    if record.ts is not None and record.ts > latest:
        raise too_late(record.ts)
    return Flow(
        src_ip=src_ip,
        dst_ip=dst_ip,
        dst_port=record.dst_port,
        protocol=record.protocol.upper(),
        src_port=record.src_port,
        ts=float(record.ts) if record.ts is not None else None,
        packets=record.packets,
        bytes=record.bytes,
        answered=record.answered,
    )


def decode_record(line: bytes) -> FlowRecord:
    """One JSONL line decoded against the schema; FlowError says which field is wrong and why."""
    try:
        return DECODER.decode(line)
    except msgspec.ValidationError as exc:
        raise FlowError(schema_problem(exc)) from None
    except msgspec.DecodeError as exc:
        raise FlowError(f"not valid JSON ({schema_problem(exc)})") from None
    except RecursionError:
        raise FlowError("not a flow record: nested too deeply") from None


def parse_flow(line: bytes, latest: float) -> Flow:
    """One JSONL line as a Flow; FlowError says which field is wrong and why."""
    return flow_from_record(decode_record(line), latest)


def bounded_lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """The stream's lines; None stands for a line over ``MAX_LINE`` bytes, whose rest is skipped
    in bounded pieces (so a file without newlines cannot fill memory)."""
    readline = stream.readline
    while line := readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE:
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = readline(MAX_LINE + 1)
        yield None


def iter_records(
    stream: IO[bytes], name: str, *, skip_bad: bool = False, stats: FlowReadStats | None = None, first: int = 1
) -> Iterator[tuple[int, FlowRecord]]:
    """Yield (line number, record) of a binary JSONL stream as the schema decodes it, before the checks
    the schema cannot make (:func:`flow_from_record`); blank lines are ignored, a bad one raises (or is
    skipped). ``stats.flows`` is left to the caller, which may still refuse a record. ``first``: the
    number of the stream's first line (a block of a longer file)."""
    stats = stats if stats is not None else FlowReadStats()
    for number, line in enumerate(bounded_lines(stream), first):
        stats.lines = number
        if line is not None and not line.strip():
            continue
        try:
            if line is None:
                raise FlowError(f"line longer than {MAX_LINE} bytes")
            record = decode_record(line)
        except FlowError as exc:
            if skip_bad:
                stats.skipped += 1
                continue
            raise FlowError(exc.what, where=f"{name}:line {number}") from None
        yield number, record


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """The records of consecutive lines of a flow file (:func:`iter_record_blocks`), with what an error
    message needs: ``line(i)`` is the line number of ``records[i]``."""

    records: list[FlowRecord]
    first: int  # the line number of records[0]; records[i] is line first + i

    def line(self, index: int) -> int:
        return self.first + index


def iter_record_blocks(stream: IO[bytes], name: str) -> Iterator[RecordBlock]:
    """The records :func:`iter_records` yields, with the same checks and errors, about ``BLOCK_BYTES`` of
    lines at a time: a block's lines are split and decoded by ``map`` over the decoder, so no Python
    code runs per line (issue #15: 1.10 -> 0.92 CPU s per 1M lines here). The blocks are small (64 KiB,
    ~450 records) so that the caller's loop finds a block's records still in cache: with 1 MiB ones
    import's read and fold was slower than line by line. A block that is not all good lines (a blank,
    overlong or bad one) is read again line by line by :func:`iter_records`, one record per block, so
    what it skips and the line an error names are those of the line-by-line read, and a record before
    the bad line still reaches the caller (whose own checks may name an earlier line).
    Memory: one block and one line at most (a line over ``MAX_LINE`` bytes is refused unread)."""
    number, rest, read, decode = 1, b"", stream.read, DECODER.decode
    while True:
        chunk = read(BLOCK_BYTES)
        if not chunk and not rest:
            return
        data = rest + chunk if rest else chunk
        end = data.rfind(b"\n") + 1 if chunk else len(data)  # at the end, an unterminated last line too
        if not end:
            if len(data) > MAX_LINE:
                raise FlowError(f"line longer than {MAX_LINE} bytes", where=f"{name}:line {number}")
            rest = data
            continue
        body, rest = data[:end], data[end:]
        lines = body.split(b"\n")
        if not lines[-1]:
            lines.pop()  # what follows the last newline
        records = None
        if max(map(len, lines)) < MAX_LINE:  # a terminated line this long is over the bound with its newline
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                records = list(map(decode, lines))
        if records is not None:
            yield RecordBlock(records, number)
        else:
            for line_number, record in iter_records(BytesIO(body), name, first=number):
                yield RecordBlock([record], line_number)
        number += len(lines)


def iter_flows(
    stream: IO[bytes], name: str, *, skip_bad: bool = False, stats: FlowReadStats | None = None
) -> Iterator[Flow]:
    """Yield flows from a binary JSONL stream; blank lines are ignored, a bad line raises (or is skipped)."""
    stats = stats if stats is not None else FlowReadStats()
    latest = horizon()
    for number, record in iter_records(stream, name, skip_bad=skip_bad, stats=stats):
        try:
            flow = flow_from_record(record, latest)
        except FlowError as exc:
            if skip_bad:
                stats.skipped += 1
                continue
            raise FlowError(exc.what, where=f"{name}:line {number}") from None
        stats.flows += 1
        yield flow


_NAMES_KEY = b'"dst_names"'
_CHUNK = 1 << 20


def _mentions(stream: IO[bytes], token: bytes) -> bool:
    """Whether the rest of ``stream`` holds ``token`` (read in chunks: a line holding it holds it)."""
    carry = b""
    while chunk := stream.read(_CHUNK):
        window = carry + chunk
        if token in window:
            return True
        carry = window[-(len(token) - 1):]
    return False


def names_in_flows(stream: IO[bytes]) -> list[DnsAnswerSeen]:
    """The DNS names flows carry for their destinations (``dst_names``), one answer per name and address
    from the first to the last flow naming it (TTL 0: the grace of :mod:`netpol_gen.model.dns` covers the
    connections after). Lines that are no good record are left to the read that judges them."""
    if stream.seekable():  # most files name nothing: find that out at the speed of reading, not line by line
        start = stream.tell()
        named = _mentions(stream, _NAMES_KEY)
        stream.seek(start)
        if not named:
            return []
    seen: dict[tuple[str, str], tuple[float, float]] = {}
    for line in bounded_lines(stream):
        if line is None or _NAMES_KEY not in line:
            continue
        try:
            record = decode_record(line)
            address = canonical_addresses(record.src_ip, record.dst_ip)[1]
        except FlowError:
            continue
        ts = float(record.ts) if record.ts is not None else -math.inf
        for name in record.dst_names:
            first, last = seen.get((name, address), (ts, ts))
            seen[(name, address)] = (min(first, ts), max(last, ts if record.ts is not None else math.inf))
    return [DnsAnswerSeen(name, address, 0, first, last) for (name, address), (first, last) in seen.items()]


def open_flows(path: str) -> tuple[IO[bytes], str]:
    """Open a flow file (``-`` is stdin) in binary, as the decoder reads it, with the name to use in messages."""
    if path == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return Path(path).open("rb"), path
    except OSError as exc:
        raise FlowError(f"cannot read flows: {exc.strerror}", where=path) from None
