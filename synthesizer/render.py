"""Policies as multi-document YAML: sorted keys, no line wrapping, and each ipBlock's ``cidr`` line
followed by a comment saying what it stands for (node, DNS names), so a reviewer need not decode
the annotations; with the synthesizer's evidence, each rule preceded by the edges it allows
(``--explain``). Same policies, same bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from netpol_gen.synthesizer.explain import RuleEvidence, annotate_rules

IPBLOCK_NOTES = ("netpol-gen.io/ingress-ipblocks", "netpol-gen.io/egress-ipblocks")
CLUSTER_SCOPED = "_cluster"  # the file of cluster-scoped policies: never a namespace's (no "_" in DNS labels)



class Inline(list[str]):
    """A list written on one line (``values: [a, b]``): the values of a folded peer, read at a glance."""


# libyaml's emitter when present: the same bytes, several times faster on large policy sets
class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


_Dumper.add_representer(Inline, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))
_DUMPER = _Dumper
# an ipBlock's or a CIDR set's cidr, or an item of a Calico nets list
_CIDR_LINE = re.compile(r"^(\s*(?:- )?(?:cidr: )?)(\S+/\d+)$")


def _notes(policy: Mapping[str, Any]) -> dict[str, str]:
    annotations = policy.get("metadata", {}).get("annotations", {})
    notes: dict[str, str] = {}
    for key in IPBLOCK_NOTES:
        notes.update(json.loads(annotations.get(key, "{}")))
    return notes


def _commented(document: str, notes: Mapping[str, str], evidence: RuleEvidence | None) -> str:
    lines = []
    for line in document.splitlines():
        match = _CIDR_LINE.match(line)
        note = notes.get(match.group(2)) if match else None
        lines.append(f"{line}  # {note}" if note else line)
    if evidence is not None:
        lines = annotate_rules(lines, evidence)
    return "\n".join(lines) + "\n"


def _key(policy: Mapping[str, Any]) -> tuple[str, str]:
    meta = policy.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""))


def render_yaml(policies: Iterable[Mapping[str, Any]],
                evidence: Mapping[tuple[str, str], RuleEvidence] | None = None) -> str:
    """One YAML document per policy, in the given order, separated by ``---``; ``evidence`` (per
    (namespace, name), see :attr:`Synthesis.evidence`) adds the edges behind each rule as comments."""
    documents = [
        _commented(yaml.dump(dict(p), Dumper=_DUMPER, sort_keys=True, default_flow_style=False, width=1 << 16),
                   _notes(p), None if evidence is None else evidence.get(_key(p), {}))
        for p in policies
    ]
    return "---\n".join(documents)


Evidence = Mapping[tuple[str, str], RuleEvidence] | None  # --explain: the edges behind each rule


def render(policies: list[dict[str, Any]], fmt: str, evidence: Evidence = None) -> str:
    """The set as YAML (with comments) or as one JSON ``List``."""
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}, indent=2, sort_keys=True) + "\n"
    return render_yaml(policies, evidence)


def render_files(policies: list[dict[str, Any]], layout: str, fmt: str, evidence: Evidence = None) -> dict[str, str]:
    """File name -> content: one file per namespace (``layout="namespace"``) or per policy."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        meta = policy["metadata"]
        namespace = meta.get("namespace") or CLUSTER_SCOPED  # a ClusterNetworkPolicy (export --baseline)
        key = namespace if layout == "namespace" else f"{namespace}.{meta['name']}"
        groups.setdefault(key, []).append(policy)
    suffix = ".json" if fmt == "json" else ".yaml"
    return {key + suffix: render(group, fmt, evidence) for key, group in groups.items()}
