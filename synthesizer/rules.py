"""One direction's rules from the (peer, port) pairs that were observed: peers allowed the same set of
ports share one rule, so the rule list is as short as it can be without allowing any peer a port it
was not seen on. Each rule keeps the edges of its peers (every one of them, as a peer sits in exactly
one rule): the provenance ``--explain`` shows a reviewer."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netpol_gen.model.learned import LearnedEdge
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.peers import Grant, PeerRef, fold_external
from netpol_gen.synthesizer.ports import PortRef, render_ports


@dataclass(frozen=True)
class Direction:
    """A direction's rules, ready for the spec, what each ipBlock stands for (cidr -> note), and per
    rule (same index) the observed edges it was written for, in a stable order."""

    rules: list[dict[str, Any]]
    ip_notes: dict[str, str]
    evidence: list[tuple[LearnedEdge, ...]]


def _edge_order(edge: LearnedEdge) -> tuple[str, str, int, str]:
    return (edge.src.key, edge.dst.key, edge.port, edge.protocol)


def build_rules(grants: Mapping[PeerRef, Grant], peer_field: str, options: Options) -> Direction:
    """``peer_field`` is ``from`` (ingress) or ``to`` (egress)."""
    folded = fold_external(grants, options)
    by_ports: dict[frozenset[PortRef], list[PeerRef]] = defaultdict(list)
    for peer, grant in folded.items():
        by_ports[grant.ports].append(peer)
    ordered = []
    for ports, peers in by_ports.items():
        peers.sort(key=lambda p: p.sort_key)
        rendered_ports = render_ports(ports, options.port_range_min)
        edges = tuple(sorted({e for p in peers for e in folded[p].edges}, key=_edge_order))
        ordered.append(((tuple(p.sort_key for p in peers), json.dumps(rendered_ports, sort_keys=True)),
                        {peer_field: [p.render() for p in peers], "ports": rendered_ports}, edges))
    ordered.sort(key=lambda entry: entry[0])
    notes = {p.cidr: p.note for p in folded if p.cidr is not None}
    return Direction([rule for _, rule, _ in ordered], dict(sorted(notes.items())),
                     [edges for _, _, edges in ordered])
