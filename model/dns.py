"""Which names an address answered for, and when: what a Cilium ``toFQDNs`` rule is judged with.

An answer seen between ``first_seen`` and ``last_seen`` with a TTL makes the address stand for the
name from a second before the first answer to TTL plus :data:`DNS_GRACE` after the last one (the same
window the ingest uses to name external destinations: a client may reuse an address a while past the
TTL, and a connection outlives the lookup that opened it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DNS_GRACE = 600.0


@dataclass(frozen=True, slots=True)
class DnsAnswerSeen:
    """Answers ``name`` -> ``address`` seen from ``first_seen`` to ``last_seen`` with ``ttl``."""

    name: str
    address: str
    ttl: int
    first_seen: float
    last_seen: float

    @property
    def window(self) -> tuple[float, float]:
        return self.first_seen - 1.0, self.last_seen + self.ttl + DNS_GRACE


@dataclass
class DnsHistory:
    """Per address, the names and the windows in which it stood for each."""

    _by_address: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)

    @classmethod
    def of(cls, answers: Iterable[DnsAnswerSeen]) -> DnsHistory:
        by_address: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for answer in answers:
            start, end = answer.window
            by_address[answer.address].append((answer.name.rstrip(".").lower(), start, end))
        return cls(dict(by_address))

    def __bool__(self) -> bool:
        return bool(self._by_address)

    def names_at(self, address: str, ts: float | None) -> frozenset[str]:
        """The names ``address`` stood for at ``ts``; without a time, every name it ever stood for."""
        return frozenset(name for name, start, end in self._by_address.get(address, ())
                         if ts is None or start <= ts <= end)

    def boundaries(self) -> set[float]:
        """The instants at which some address's names change (for the cluster's epochs)."""
        return {t for windows in self._by_address.values() for _, start, end in windows for t in (start, end)}

    def boundaries_of(self, address: str) -> set[float]:
        """The instants at which the names of ``address`` change."""
        return {t for _, start, end in self._by_address.get(address, ()) for t in (start, end)}


def names_throughout(dns_names: Mapping[str, Sequence[str]]) -> list[DnsAnswerSeen]:
    """Answers that name each address by the names learnt for it at every time: what a learning
    source (``LearnedInputs.dns_names``) knows, which already kept only the names whose answers were
    valid when the address was reached."""
    return [DnsAnswerSeen(name, address, 0, -math.inf, math.inf)
            for address, names in dns_names.items() for name in names]
