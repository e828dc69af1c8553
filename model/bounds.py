"""The declared bounds of every value that crosses a boundary into netpol-gen (flow files, the wire
format of ``serve``, cluster snapshots), as types the schema library enforces while it decodes.

One place says what a port, a count, a timestamp or a Kubernetes name may be, so that the JSONL
reader, the HTTP service and the store can never disagree, and a value that would break the store
for good (an infinite timestamp, a negative count, a path as a namespace) is refused at the door
with the field it is in. The types are plain ``int``/``float``/``str`` to the rest of the code.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

from msgspec import Meta

# Timestamps (seconds since the epoch) are accepted from 2000-01-01 up to one day after now: earlier
# or later is a broken clock or a hostile value, and a future one would keep `status` "learning".
EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z
LATEST_STATIC = 4_102_444_800.0  # 2100-01-01: the schema's fixed bound; `horizon()` is the live one
FUTURE_SLACK = 86_400.0
INT64_MAX = 2**63 - 1  # the store's BIGINT columns

Port = Annotated[int, Meta(ge=0, le=65535)]
DestinationPort = Annotated[int, Meta(ge=1, le=65535)]
Count = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Seconds = Annotated[float, Meta(ge=EARLIEST, le=LATEST_STATIC)]
Ttl = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Protocol = Annotated[str, Meta(pattern="^(TCP|UDP|SCTP)$")]
# An IP address's text is at most 45 characters (IPv6 with an embedded IPv4); the parser checks the rest.
AddressText = Annotated[str, Meta(min_length=2, max_length=45)]

# Kubernetes object names: a DNS-1123 subdomain (pods, Services, nodes; at most 253 characters) and
# a DNS-1123 label (namespaces; at most 63), as the API server validates them.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ObjectName = Annotated[str, Meta(pattern=DNS_SUBDOMAIN, max_length=253)]
NamespaceName = Annotated[str, Meta(pattern=DNS_LABEL, max_length=63)]
# A DNS name learnt from an answer: 253 characters of printable ASCII without spaces.
DnsName = Annotated[str, Meta(pattern=r"^[!-~]+$", max_length=253)]
# Where an edge's connections were learnt without a handshake (model.aggregate's ESTABLISHED_SOURCES).
EstablishedSource = Annotated[str, Meta(pattern="^(conntrack|sockets)$")]
# A workload kind as the API names owner kinds (Deployment, StatefulSet, Job, Pod, ...).
WorkloadKind = Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=63)]

_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)
_LABEL = re.compile(DNS_LABEL)


def horizon() -> float:
    """The latest timestamp accepted now: one day ahead, for clocks a little fast."""
    return time.time() + FUTURE_SLACK


def name_problem(value: str, *, namespace: bool = False) -> str | None:
    """Why ``value`` is not a valid Kubernetes object (or namespace) name, or None if it is."""
    limit, pattern = (63, _LABEL) if namespace else (253, _SUBDOMAIN)
    if len(value) > limit or not pattern.fullmatch(value):
        kind = "DNS-1123 label" if namespace else "DNS-1123 subdomain"
        return f"{value[:80]!r} is not a valid name (a {kind}: lower-case letters, digits, '-', at most {limit})"
    return None
