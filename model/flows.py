"""The flow record: one connection, ``src`` being its initiator, as JSONL on disk.

``check`` reads it, ``import`` stores it, the collector and the pcap reader produce it. One line:
``{"src_ip","src_port","dst_ip","dst_port","protocol","ts","packets","bytes"}`` with ``src_port``,
``ts``, ``packets`` and ``bytes`` optional. A malformed line aborts the read with its line number
(``skip_bad=True`` counts and skips it instead).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from netpol_gen.errors import FlowError

PROTOCOLS = ("TCP", "UDP", "SCTP")


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
        }
        return json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":"))


@dataclass
class FlowReadStats:
    """What a read saw: lines read, flows returned, bad lines skipped (only with ``skip_bad``)."""

    lines: int = 0
    flows: int = 0
    skipped: int = 0


@lru_cache(maxsize=1 << 16)
def _parse_address(value: str) -> tuple[str, int] | None:
    """``value`` canonicalised and its IP version, or None if it is no address. Cached because a
    flow file names the same few thousand addresses millions of times and ``ipaddress`` is slow."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(address), address.version


def _canonical_ip(value: Any, field: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise FlowError(f"{field} must be an IP address string, got {value!r}")
    parsed = _parse_address(value)
    if parsed is None:
        raise FlowError(f"{field} {value!r} is not an IP address")
    return parsed


def _port(value: Any, field: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise FlowError(f"{field} must be an integer 0-65535, got {value!r}")
    return value


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FlowError(f"{field} must be a non-negative integer, got {value!r}")
    return value


def flow_from_record(record: Any) -> Flow:
    """Validate one decoded JSON object and build a Flow; FlowError says which field is wrong."""
    if not isinstance(record, dict):
        raise FlowError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("src_ip", "dst_ip", "dst_port", "protocol"):
        if key not in record:
            raise FlowError(f"missing field {key!r}")
    protocol = record["protocol"]
    if not isinstance(protocol, str) or protocol.upper() not in PROTOCOLS:
        raise FlowError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    ts = record.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        raise FlowError(f"ts must be a number (seconds since the epoch), got {ts!r}")
    src_ip, src_version = _canonical_ip(record["src_ip"], "src_ip")
    dst_ip, dst_version = _canonical_ip(record["dst_ip"], "dst_ip")
    if src_version != dst_version:
        raise FlowError(f"src_ip {src_ip} and dst_ip {dst_ip} are of different IP families")
    return Flow(
        src_ip=src_ip,
        dst_ip=dst_ip,
        dst_port=_port(record["dst_port"], "dst_port", optional=False) or 0,
        protocol=protocol.upper(),
        src_port=_port(record.get("src_port"), "src_port", optional=True),
        ts=float(ts) if ts is not None else None,
        packets=_count(record.get("packets"), "packets"),
        bytes=_count(record.get("bytes"), "bytes"),
    )


def iter_flows(
    stream: IO[str], name: str, *, skip_bad: bool = False, stats: FlowReadStats | None = None
) -> Iterator[Flow]:
    """Yield flows from a JSONL stream; blank lines are ignored, a bad line raises (or is skipped)."""
    stats = stats if stats is not None else FlowReadStats()
    loads = json.loads
    for number, line in enumerate(stream, 1):
        stats.lines = number
        if not line.strip():
            continue
        try:
            try:
                record = loads(line)
            except ValueError as exc:
                raise FlowError(f"not valid JSON ({exc.args[0].split(':')[0]})") from None
            flow = flow_from_record(record)
        except FlowError as exc:
            if skip_bad:
                stats.skipped += 1
                continue
            raise FlowError(exc.what, where=f"{name}:line {number}") from None
        stats.flows += 1
        yield flow


def open_flows(path: str) -> tuple[IO[str], str]:
    """Open a flow file (``-`` is stdin) and return it with the name to use in messages."""
    if path == "-":
        return sys.stdin, "<stdin>"
    try:
        return Path(path).open(encoding="utf-8"), path
    except OSError as exc:
        raise FlowError(f"cannot read flows: {exc.strerror}", where=path) from None
