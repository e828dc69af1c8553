"""Rule ports: a destination port by its container port name when the destination's pods all agree
on it (names survive a port renumbering in the pod template), else by number; contiguous numbers
folded into ``port``/``endPort`` when asked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netpol_gen.model.learned import PodView


@dataclass(frozen=True, slots=True)
class PortRef:
    """One allowed port: ``port`` is a number or a container port name (resolved on the destination)."""

    protocol: str
    port: int | str

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        if isinstance(self.port, int):
            return (self.protocol, 0, self.port, "")
        return (self.protocol, 1, 0, self.port)


def common_port_name(pods: Sequence[PodView], port: int, protocol: str) -> str | None:
    """The name every pod gives container port ``port``/``protocol``, or None if any pod differs.

    A name is only usable if it resolves back to ``port`` on every pod: the evaluator (like the
    CNI) resolves a named port to the first container port of that name and protocol."""
    names = {
        next((c.name for c in pod.container_ports if c.port == port and c.protocol == protocol), None)
        for pod in pods
    }
    if len(names) != 1:
        return None
    name = names.pop()
    if name is None:
        return None
    for pod in pods:
        first = next(c.port for c in pod.container_ports if c.name == name and c.protocol == protocol)
        if first != port:
            return None
    return name


def port_ref(port: int, protocol: str, destination_pods: Sequence[PodView], named: bool) -> PortRef:
    """``destination_pods`` empty: the destination is not a pod (node, external), so only a number works."""
    name = common_port_name(destination_pods, port, protocol) if named and destination_pods else None
    return PortRef(protocol, name or port)


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct numbers as (first, last) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def render_ports(ports: Iterable[PortRef], range_min: int | None) -> list[dict[str, Any]]:
    """NetworkPolicyPort entries in a stable order; runs of at least ``range_min`` numbers of one
    protocol become a range (every port in the range was observed, so nothing more is opened)."""
    refs = sorted(set(ports), key=lambda r: r.sort_key)
    entries: list[dict[str, Any]] = []
    for protocol in sorted({r.protocol for r in refs}):
        numbers = [r.port for r in refs if r.protocol == protocol and isinstance(r.port, int)]
        for first, last in _runs(numbers):
            if range_min is not None and last - first + 1 >= range_min:
                entries.append({"protocol": protocol, "port": first, "endPort": last})
            else:
                entries.extend({"protocol": protocol, "port": n} for n in range(first, last + 1))
        entries.extend({"protocol": protocol, "port": r.port} for r in refs
                       if r.protocol == protocol and isinstance(r.port, str))
    return entries
