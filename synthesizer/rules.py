"""One direction's rules from the (peer, port) pairs that were observed: peers allowed the same set of
ports share one rule, so the rule list is as short as it can be without allowing any peer a port it
was not seen on; the peers of a rule are folded where that is exact (:mod:`.fold`). Each rule keeps
the edges of its peers (every one of them, as a peer sits in exactly one rule), with the folded value
each edge stands behind: the provenance ``--explain`` shows a reviewer."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.synthesizer.explain import Behind
from netpol_gen.synthesizer.fold import PeerFolder, RulePeer
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.peers import Grant, PeerRef, fold_external
from netpol_gen.synthesizer.ports import PortRef, render_ports


@dataclass(frozen=True)
class Direction:
    """A direction's rules, ready for the spec, what each ipBlock stands for (cidr -> note), per rule
    (same index) the observed edges it was written for in a stable order, and the namespaces a rule
    admits whole (``fold_namespaces``)."""

    rules: list[dict[str, Any]]
    ip_notes: dict[str, str]
    evidence: list[tuple[Behind, ...]]
    namespace_wide: list[str] = field(default_factory=list)


@dataclass
class _Rule:
    peers: list[RulePeer]
    ports: set[PortRef] = field(default_factory=set)
    evidence: set[Behind] = field(default_factory=set)


def _edge_order(behind: Behind) -> tuple[str, str, int, str, str]:
    edge = behind.edge
    return (edge.src.key, edge.dst.key, edge.port, edge.protocol, behind.value)


def build_rules(grants: Mapping[PeerRef, Grant], peer_field: str, options: Options, folder: PeerFolder,
                policy_namespace: str) -> Direction:
    """``peer_field`` is ``from`` (ingress) or ``to`` (egress). With ``options.fold``, rules whose
    (folded) peers are the same merge their ports: one rule allows each of its peers each of its ports,
    so two rules with the same peers are one rule with both port sets."""
    folded = fold_external(grants, options)
    by_ports: dict[frozenset[PortRef], list[PeerRef]] = defaultdict(list)
    for peer, grant in folded.items():
        by_ports[grant.ports].append(peer)
    rules: dict[str, _Rule] = {}
    for ports, peers in by_ports.items():
        entries = folder.fold(peers, policy_namespace)
        key = json.dumps([e.rendered for e in entries], sort_keys=True)
        if not options.fold:
            key += json.dumps(sorted(p.sort_key for p in ports))
        rule = rules.setdefault(key, _Rule(entries))
        rule.ports |= ports
        rule.evidence |= {Behind(edge, member.describe() if entry.folded else "")
                          for entry in entries for member in entry.members for edge in folded[member].edges}
    ordered = []
    for rule in rules.values():
        rendered_ports = render_ports(rule.ports, options.port_range_min)
        ordered.append(((tuple(e.sort_key for e in rule.peers), json.dumps(rendered_ports, sort_keys=True)),
                        {peer_field: [e.rendered for e in rule.peers], "ports": rendered_ports},
                        tuple(sorted(rule.evidence, key=_edge_order))))
    ordered.sort(key=lambda entry: entry[0])
    notes: dict[str, set[str]] = defaultdict(set)
    for peer in folded:
        if peer.cidr is not None:
            notes[peer.cidr].add(peer.note)  # two folds of one prefix (other ports) share its ipBlock
    wide = sorted({e.namespace_wide for r in rules.values() for e in r.peers if e.namespace_wide is not None})
    ip_notes = {cidr: "; ".join(sorted(n)) for cidr, n in sorted(notes.items())}
    return Direction([rule for _, rule, _ in ordered], ip_notes, [edges for _, _, edges in ordered], wide)
