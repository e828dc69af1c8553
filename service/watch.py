"""What ``watch`` prints: denied edges as they arrive, one per edge (again only when it was denied anew).

Without following, the edges denied since ``since`` are read once. Following, the source is read again
every ``every`` seconds and an edge is yielded when it is new or its latest denial is later than when it
was last yielded, so a line stands for the edge's denials so far, never for one flow.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime

from netpol_gen.errors import InputError
from netpol_gen.service.shadow_source import ShadowSource
from netpol_gen.store.buckets import MINUTE
from netpol_gen.store.shadow import DeniedEdge

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float) -> float:
    """``1h``/``30m``/``7d``/``90s`` before ``now``, or an RFC 3339 time with its offset (``...Z``).

    Denials are counted per minute (per hour once a day old, see :mod:`netpol_gen.store.shadow`), so
    a span shorter than a minute would be answered with up to a minute more: it is refused."""
    ago = _AGO.match(value)
    if ago:
        seconds = int(ago.group(1)) * _UNIT[ago.group(2)]
        if seconds < MINUTE:
            raise InputError(f"denials are counted per minute: {value!r} is shorter; use 1m or more",
                             where="--since")
        return now - seconds
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InputError(f"expected a duration (1h, 30m, 7d) or an RFC 3339 time with offset, got {value!r}",
                         where="--since")
    return parsed.timestamp()


def denied_stream(source: ShadowSource, set_name: str | None, since: float | None, *, follow: bool = False,
                  every: float = 5.0, stop: threading.Event | None = None) -> Iterator[DeniedEdge]:
    """Denied edges from ``since``; following, until ``stop`` is set."""
    stop = stop or threading.Event()
    yielded: dict[tuple[str, str, str, int, str], float] = {}
    while True:
        for edge in source.denied(set_name, since):
            key = (edge.set, edge.src, edge.dst, edge.port, edge.protocol)
            if yielded.get(key, -1.0) < edge.last_seen:
                yielded[key] = edge.last_seen
                yield edge
        if not follow or stop.wait(every):
            return
