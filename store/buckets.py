"""Time buckets of the per-interval counts (shadow denials, unanswered attempts): a minute over the
last :data:`DETAIL` seconds, an hour before, so ``watch --since 10m`` counts to the minute while an edge
counted all month costs a row per hour."""

from __future__ import annotations

MINUTE, HOUR = 60.0, 3600.0
DETAIL = 86400.0  # how long counts stay per minute before a roll-up makes them per hour


def bucket(ts: float, now: float) -> float:
    """The bucket of connections last seen at ``ts``: its minute, or its hour once past the detail window."""
    width = HOUR if ts < now - DETAIL else MINUTE
    return ts // width * width
