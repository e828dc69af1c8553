"""The service map as plain data: what ``netpol-gen map`` draws, computed once by
:mod:`.map_build` and handed to the layout and HTML renderers, which add nothing of their own.

A node is a workload (``<ns>/<Kind>/<name>``) or a peer outside the workloads (a node's addresses,
an external address, an unknown cluster address). An edge is one destination port of a pair, as
the store learnt it; when a change is shown each edge carries its :class:`Fate`, read off the
diff's impact (never judged again here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Fate(Enum):
    """What the change does to an edge. ``DENIED``: observed, denied under both sets (the change
    neither cuts nor opens it, yet it is not allowed): rare, worth a look, so it is not hidden among
    the allowed ones."""

    ALLOWED = "allowed"
    NEW = "new"
    CUT = "cut"
    UNOBSERVED = "unobserved"
    DENIED = "denied"


class PeerKind(Enum):
    WORKLOAD = "workload"
    NODE = "node"
    EXTERNAL = "external"
    UNKNOWN = "unknown"


@dataclass
class MapNode:
    """A box on the map. ``namespace`` is None for peers outside the workloads. ``policies`` and
    ``in_force`` map a policy key to its YAML (the proposed or learnt set's, with ``--explain``
    provenance when synthesized; the set in force's when a change is shown)."""

    id: str
    kind: PeerKind
    label: str
    namespace: str | None = None
    detail: str = ""
    pods: int = 0
    policies: dict[str, str] = field(default_factory=dict)
    in_force: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "label": self.label, "namespace": self.namespace,
                "detail": self.detail, "pods": self.pods, "policies": self.policies, "in_force": self.in_force}


@dataclass
class MapEdge:
    """One destination port between two nodes. ``connections``/``first_seen``/``last_seen`` are the
    store's (zero and None for an opening never observed); ``now``/``proposed`` are the reasons the
    two sets give when the change flips it."""

    src: str
    dst: str
    port: int
    protocol: str
    connections: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    fate: Fate | None = None
    now: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The edge's stable name, as the page's ``data-edge`` carries it."""
        return f"{self.src} -> {self.dst} {self.port}/{self.protocol}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "src": self.src, "dst": self.dst, "port": self.port, "protocol": self.protocol,
                "connections": self.connections, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "fate": self.fate.value if self.fate else None, "now": self.now, "proposed": self.proposed}


@dataclass
class ServiceMap:
    """Everything the page shows. ``change`` is None for the map of what was learnt, else a line
    naming the two sets compared; ``summary`` is the plain summary lines printed with it;
    ``warnings``: bugs the synthesized set's verification found."""

    nodes: list[MapNode]
    edges: list[MapEdge]
    change: str | None = None
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return sorted({n.namespace for n in self.nodes if n.namespace is not None})

    def fate_counts(self) -> dict[str, int]:
        counts = {fate.value: 0 for fate in Fate}
        for edge in self.edges:
            if edge.fate is not None:
                counts[edge.fate.value] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "summary": self.summary, "namespaces": self.namespaces,
                "nodes": [n.to_dict() for n in self.nodes], "edges": [e.to_dict() for e in self.edges]}
