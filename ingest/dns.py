"""DNS response parsing: which names resolved to which addresses, for naming external peers.

Captured DNS is hostile input (truncated by the snap length, garbage on port 53, crafted pointer
loops), so :func:`parse_response` never raises: a message it cannot read is reported as ``None``
and the caller counts it. Compression pointers must point strictly backwards, which bounds every
name walk by the message length. An address is reported for the name that owns the A/AAAA record
and for every name that reaches it through a CNAME chain, so the name the client asked for (and
each alias on the way) is associated with the address.

Responses repeat: every pod of a namespace gets the same answers (and the same NXDOMAINs of its
search-list expansions) from the cluster DNS cache, so the answers of a message are memoised by its
bytes after the 2-byte ID (:data:`_MEMO_SIZE` messages), and a repeated one costs a dictionary lookup.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from functools import lru_cache

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_TYPE_A = 1
_TYPE_CNAME = 5
_TYPE_AAAA = 28
_FLAG_RESPONSE = 0x8000
_MAX_NAME = 255
_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """``name`` resolved to ``address`` at ``ts``, valid for ``ttl`` seconds (shortest TTL on its chain)."""

    ts: float
    name: str
    address: str
    ttl: int


class _Malformed(Exception):
    """Raised inside the parser only; :func:`parse_response` turns it into ``None``."""


def _name(msg: bytes, off: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``off``; return it and the offset just past it."""
    labels: list[str] = []
    length = 0
    end = -1  # offset after the name in the record, fixed at the first pointer
    limit = off  # a pointer must point before the position it was found at: no loops
    while True:
        size = msg[off]
        if size >= 0xC0:
            target = ((size & 0x3F) << 8) | msg[off + 1]
            if target >= limit:
                raise _Malformed("forward or looping compression pointer")
            if end < 0:
                end = off + 2
            off = limit = target
            continue
        if size > 63:
            raise _Malformed("reserved label type")
        off += 1
        if size == 0:
            break
        label = msg[off : off + size]
        if len(label) != size:
            raise _Malformed("label past the end")
        length += size + 1
        if length > _MAX_NAME:
            raise _Malformed("name longer than 255 bytes")
        labels.append(label.decode("ascii", "backslashreplace").lower())
        off += size
    return ".".join(labels), end if end >= 0 else off


def _records(msg: bytes) -> tuple[list[tuple[str, str, int]], dict[str, list[tuple[str, int]]]]:
    """Return the A/AAAA records ``(owner, address, ttl)`` and CNAMEs as ``target -> [(alias, ttl)]``."""
    _, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(msg, 0)
    if not flags & _FLAG_RESPONSE:
        raise _Malformed("not a response")
    off = 12
    for _ in range(qdcount):
        off = _name(msg, off)[1] + 4
    addresses: list[tuple[str, str, int]] = []
    aliases: dict[str, list[tuple[str, int]]] = {}
    for _ in range(ancount):
        owner, off = _name(msg, off)
        rtype, _, ttl, rdlen = _RR.unpack_from(msg, off)
        off += 10
        if off + rdlen > len(msg):
            raise _Malformed("record data past the end")
        if rtype == _TYPE_A and rdlen == 4:
            addresses.append((owner, socket.inet_ntop(socket.AF_INET, msg[off : off + 4]), ttl))
        elif rtype == _TYPE_AAAA and rdlen == 16:
            addresses.append((owner, socket.inet_ntop(socket.AF_INET6, msg[off : off + 16]), ttl))
        elif rtype == _TYPE_CNAME:
            aliases.setdefault(_name(msg, off)[0], []).append((owner, ttl))
        off += rdlen
    return addresses, aliases


def parse_response(msg: bytes, ts: float) -> list[DnsAnswer] | None:
    """Return the address answers in a DNS response (``[]`` if none), or ``None`` if it is malformed.

    A message that is a query, not a response, counts as malformed: it should not come from port 53.
    """
    found = _answers(msg[2:])
    if found is None:
        return None
    return [DnsAnswer(ts, name, address, ttl) for name, address, ttl in found]


@lru_cache(maxsize=_MEMO_SIZE)
def _answers(after_id: bytes) -> tuple[tuple[str, str, int], ...] | None:
    """``(name, address, ttl)`` of each answer of the message whose bytes after its ID are ``after_id``
    (the ID changes no answer, and offsets stay those of the message), or ``None`` if it is malformed."""
    try:
        addresses, aliases = _records(b"\x00\x00" + after_id)
    except (_Malformed, struct.error, IndexError, ValueError):
        return None
    answers: list[tuple[str, str, int]] = []
    for owner, address, ttl in addresses:
        pending = [(owner, ttl)]
        seen = {owner}
        while pending:
            name, name_ttl = pending.pop()
            answers.append((name, address, name_ttl))
            for alias, alias_ttl in aliases.get(name, ()):
                if alias not in seen:
                    seen.add(alias)
                    pending.append((alias, min(name_ttl, alias_ttl)))
    return tuple(answers)
