"""``--explain``: the observed edges behind each rule, as YAML comments above the rule.

Comments keep the output a valid, applyable policy set, sit next to the rule a reviewer is reading,
and come from the synthesizer's own provenance (the edges each rule was built from), so they cannot
disagree with what was generated. Edges are listed in a stable order: same store, same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from netpol_gen.model.learned import LearnedEdge

RULE_FIELDS = ("egress", "ingress")  # the spec keys holding rules, as a key-sorted dump writes them


@dataclass(frozen=True, slots=True)
class Behind:
    """An observed edge behind a rule and, when its peer was folded with others, the selector of that
    peer (``app=web``): the value of the fold this edge justifies."""

    edge: LearnedEdge
    value: str = ""


RuleEvidence = dict[str, list[tuple[Behind, ...]]]  # spec field (ingress/egress) -> per rule index -> edges


def timestamp(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else "unknown"


def edge_line(edge: LearnedEdge) -> str:
    """One edge: ends, port, how often and when it was seen, and, when no connection of it was seen
    starting, which table of open connections it was learnt from (a reviewer may want to know that
    the edge rests on connections older than the capture)."""
    count = f"{edge.connections} connection{'s' if edge.connections != 1 else ''}"
    line = f"{edge.describe()}: {count}, {timestamp(edge.first_seen)} .. {timestamp(edge.last_seen)}"
    if edge.captured:
        return line
    return f"{line}; never seen starting: open connections read from {', '.join(s for s, _ in edge.established)}"


def rule_comment(rule_field: str, index: int, edges: Sequence[Behind], indent: str) -> list[str]:
    """The heading and one line per edge; an edge behind a folded peer is led by its value."""
    heading = f"{indent}# {rule_field}[{index}] allows {len(edges)} observed edge{'s' if len(edges) != 1 else ''}:"
    return [heading, *(f"{indent}#   {f'[{b.value}] ' if b.value else ''}{edge_line(b.edge)}" for b in edges)]


def annotate_rules(lines: Sequence[str], evidence: RuleEvidence) -> list[str]:
    """``lines`` of one policy dumped with sorted keys and block style: a comment block goes above each
    rule, i.e. above each ``  - `` item directly under ``  ingress:``/``  egress:``."""
    out: list[str] = []
    rule_field: str | None = None
    index = 0
    for line in lines:
        if line.rstrip(":").strip() in RULE_FIELDS and line.startswith("  ") and not line.startswith("   "):
            rule_field, index = line.strip().rstrip(":"), 0
        elif rule_field is not None and line.startswith("  - "):
            rules = evidence.get(rule_field, ())
            if index < len(rules):
                out.extend(rule_comment(rule_field, index, rules[index], "  "))
            index += 1
        elif rule_field is not None and not line.startswith("    "):
            rule_field = None
        out.append(line)
    return out
