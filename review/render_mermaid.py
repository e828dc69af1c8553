"""The Mermaid ``flowchart`` of the edges a change flips, for ``diff --format markdown``: GitHub and
GitLab draw a ```` ```mermaid ```` block in a pull-request comment, so a reviewer sees the change
before reading a table.

Only changed edges are drawn (cut, newly allowed, opened though never observed), worst first, and at
most ``max_edges`` of them: a "+N more" node stands for the rest, since a chart of hundreds of edges
is unreadable and the hosts refuse very large diagrams. Each edge's label names its fate in words as
well as by colour and line style (the map's colours), so it reads without colour too. Nodes get
generated ids (``n0``, ``n1``, ...) and quoted labels, so no workload name can collide with Mermaid's
keywords or syntax.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol_gen.evaluator.impact import Connection, Impact
from netpol_gen.review.map_model import Fate

MAX_EDGES = 30

# Fate -> (arrow, words in the label, linkStyle): the map page's colours (review/map_page.css).
_STYLES = {
    Fate.CUT: ("--x", "CUT", "stroke:#dc2626,stroke-width:3px"),
    Fate.NEW: ("==>", "newly allowed", "stroke:#d97706,stroke-width:3px"),
    Fate.UNOBSERVED: ("-.->", "never seen, opened", "stroke:#7c3aed,stroke-width:2px,stroke-dasharray:5 5"),
}


@dataclass(frozen=True)
class ChangedEdge:
    """One connection the change flips; ``flows`` is the recorded flows behind it (0: never seen)."""

    connection: Connection
    fate: Fate
    flows: int = 0


def changed_edges(impact: Impact) -> list[ChangedEdge]:
    """Worst first: cut, then newly allowed (each by flows, most first), then opened but never seen."""
    cut = [ChangedEdge(g.connection, Fate.CUT, g.flows) for g in impact.breaking]
    new = [ChangedEdge(g.connection, Fate.NEW, g.flows) for g in impact.opening]
    opened = [ChangedEdge(o.connection, Fate.UNOBSERVED) for o in impact.opened]
    by_flows = lambda e: (-e.flows, e.connection)  # noqa: E731
    return [*sorted(cut, key=by_flows), *sorted(new, key=by_flows), *opened]


def _label(text: str) -> str:
    """``text`` inside a quoted Mermaid label, as written: entity codes for the characters that would
    end it (``"``), be read as HTML (``<``, ``>``, ``&``), as Markdown (a backtick) or as an entity code
    (``#``, escaped first)."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#38;"), ("`", "#96;")):
        text = text.replace(char, code)
    return f'"{text}"'


def flowchart(impact: Impact, max_edges: int = MAX_EDGES) -> str | None:
    """The Mermaid source of the changed edges (None when nothing changes)."""
    edges = changed_edges(impact)
    if not edges:
        return None
    shown = edges[:max_edges]
    ids: dict[str, str] = {}
    for edge in shown:
        for end in (edge.connection.src, edge.connection.dst):
            ids.setdefault(end, f"n{len(ids)}")
    lines = ["flowchart LR", *(f"  {node_id}[{_label(name)}]" for name, node_id in ids.items())]
    links: dict[Fate, list[int]] = {}
    for index, edge in enumerate(shown):
        arrow, words, _ = _STYLES[edge.fate]
        c = edge.connection
        flows = f", {edge.flows} flows" if edge.flows else ""
        lines.append(f"  {ids[c.src]} {arrow}|{_label(f'{words}: {c.protocol}/{c.port}{flows}')}| {ids[c.dst]}")
        links.setdefault(edge.fate, []).append(index)
    if len(edges) > len(shown):
        lines.append(f"  more[{_label(f'+{len(edges) - len(shown)} more changed edges: see the tables below')}]")
    lines += [f"  linkStyle {','.join(map(str, indices))} {_STYLES[fate][2]}" for fate, indices in links.items()]
    return "\n".join(lines) + "\n"
