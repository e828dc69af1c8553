"""Policies as multi-document YAML: sorted keys, no line wrapping, and each ipBlock's ``cidr`` line
followed by a comment saying what it stands for (node, DNS names), so a reviewer need not decode
the annotations; with the synthesizer's evidence, each rule preceded by the edges it allows
(``--explain``). Same policies, same bytes."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from netpol_gen.synthesizer.explain import RuleEvidence, annotate_rules

IPBLOCK_NOTES = ("netpol-gen.io/ingress-ipblocks", "netpol-gen.io/egress-ipblocks")
CLUSTER_SCOPED = "_cluster"  # the file of cluster-scoped policies: never a namespace's (no "_" in DNS labels)



class Inline(list[str]):
    """A list written on one line (``values: [a, b]``): the values of a folded peer, read at a glance."""


_STR, _INT, _BOOL, _NULL, _SEQ, _MAP = (f"tag:yaml.org,2002:{kind}"
                                        for kind in ("str", "int", "bool", "null", "seq", "map"))


# libyaml's emitter when present: the same bytes, several times faster on large policy sets
class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The safe dumper (sorted keys, block style) with its Python half made cheap, node for node the
    same: the representer builds the nodes of plain strings, ints, booleans, None, dicts and lists
    directly (the generic one dispatches on the type's MRO and checks aliases per value), and the
    resolver's answer per (kind, value, implicit) is memoised for scalars (the emitter asks it twice per scalar,
    and a policy set repeats the same keys and values thousands of times). Anything else goes the
    generic way."""

    def __init__(self, *args: Any, resolved: dict[tuple[str, tuple[bool, ...]], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resolved = resolved

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:  # a collection's value is its list of nodes: nothing to memoise
            return str(super().resolve(kind, value, implicit))
        key = (value, tuple(implicit))  # the emitter may pass a list
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = super().resolve(kind, value, implicit)
        return found

    def represent_data(self, data: Any) -> yaml.Node:
        kind = type(data)
        if kind is str:
            return yaml.ScalarNode(_STR, data)
        if kind is bool:
            return yaml.ScalarNode(_BOOL, "true" if data else "false")
        if kind is int:
            return yaml.ScalarNode(_INT, str(data))
        if data is None:
            return yaml.ScalarNode(_NULL, "null")
        if kind is not dict and kind is not list:
            return super().represent_data(data)
        seen = self.represented_objects.get(id(data))
        if seen is not None:  # the same object twice: the generic representer's node, hence an alias
            return seen
        self.object_keeper.append(data)
        if kind is list:
            sequence = yaml.SequenceNode(_SEQ, [], flow_style=self.default_flow_style)
            self.represented_objects[id(data)] = sequence
            sequence.value.extend(self.represent_data(item) for item in data)
            return sequence
        mapping = yaml.MappingNode(_MAP, [], flow_style=self.default_flow_style)
        self.represented_objects[id(data)] = mapping
        items = list(data.items())
        with contextlib.suppress(TypeError):  # keys of mixed types: insertion order, as the generic representer
            items = sorted(items)
        mapping.value.extend((self.represent_data(key), self.represent_data(value)) for key, value in items)
        return mapping


_Dumper.add_representer(Inline, lambda dumper, data: dumper.represent_sequence(
    _SEQ, data, flow_style=True))
# an ipBlock's or a CIDR set's cidr, or an item of a Calico nets list
_CIDR_LINE = re.compile(r"^(\s*(?:- )?(?:cidr: )?)(\S+/\d+)$")


def _metadata(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    """The document's metadata; the renderer writes any YAML document, so one without a mapping there has none."""
    meta = policy.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _notes(policy: Mapping[str, Any]) -> dict[str, str]:
    annotations = _metadata(policy).get("annotations")
    if not isinstance(annotations, Mapping):
        return {}
    notes: dict[str, str] = {}
    for key in IPBLOCK_NOTES:
        notes.update(json.loads(annotations.get(key, "{}")))
    return notes


def _commented(document: str, notes: Mapping[str, str], evidence: RuleEvidence | None) -> str:
    if not notes and evidence is None:  # nothing to add (the emitter ends every document with a newline)
        return document
    lines = []
    for line in document.splitlines():
        match = _CIDR_LINE.match(line) if "/" in line else None
        note = notes.get(match.group(2)) if match else None
        lines.append(f"{line}  # {note}" if note else line)
    if evidence is not None:
        lines = annotate_rules(lines, evidence)
    return "\n".join(lines) + "\n"


def _key(policy: Mapping[str, Any]) -> tuple[str, str]:
    meta = _metadata(policy)
    return (meta.get("namespace", ""), meta.get("name", ""))


def dump_documents(policies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each policy's YAML document on its own, without comments: what :func:`render_yaml` joins. The
    synthesizer dumps its set once (:attr:`Synthesis.documents`, which its line count is taken from)
    and export writes those, since the representer is most of what rendering costs."""
    resolved: dict[tuple[str, tuple[bool, ...]], str] = {}
    return [_dump(p, resolved) for p in policies]


def render_yaml(policies: Iterable[Mapping[str, Any]],
                evidence: Mapping[tuple[str, str], RuleEvidence] | None = None,
                documents: Sequence[str] | None = None) -> str:
    """One YAML document per policy, in the given order, separated by ``---``; ``evidence`` (per
    (namespace, name), see :attr:`Synthesis.evidence`) adds the edges behind each rule as comments.
    ``documents``: the policies already dumped (:func:`dump_documents`), not dumped again."""
    policies = list(policies)
    dumped = dump_documents(policies) if documents is None else documents
    return "---\n".join(
        _commented(document, _notes(p), None if evidence is None else evidence.get(_key(p), {}))
        for p, document in zip(policies, dumped, strict=True)
    )


def _dump(policy: Mapping[str, Any], resolved: dict[tuple[str, tuple[bool, ...]], str]) -> str:
    """One policy as a YAML stream of its own (what ``yaml.dump`` writes with these settings)."""
    stream = io.StringIO()
    dumper = _Dumper(stream, default_flow_style=False, width=1 << 16, sort_keys=True, resolved=resolved)
    try:
        dumper.open()
        dumper.represent(dict(policy))
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()


Evidence = Mapping[tuple[str, str], RuleEvidence] | None  # --explain: the edges behind each rule


def render(policies: list[dict[str, Any]], fmt: str, evidence: Evidence = None,
           documents: Sequence[str] | None = None) -> str:
    """The set as YAML (with comments) or as one JSON ``List``; ``documents`` as for :func:`render_yaml`."""
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}, indent=2, sort_keys=True) + "\n"
    return render_yaml(policies, evidence, documents)


def render_files(policies: list[dict[str, Any]], layout: str, fmt: str, evidence: Evidence = None,
                 documents: Sequence[str] | None = None) -> dict[str, str]:
    """File name -> content: one file per namespace (``layout="namespace"``) or per policy."""
    groups: dict[str, list[int]] = {}
    for index, policy in enumerate(policies):
        meta = policy["metadata"]
        namespace = meta.get("namespace") or CLUSTER_SCOPED  # a ClusterNetworkPolicy (export --baseline)
        key = namespace if layout == "namespace" else f"{namespace}.{meta['name']}"
        groups.setdefault(key, []).append(index)
    suffix = ".json" if fmt == "json" else ".yaml"
    return {key + suffix: render([policies[i] for i in group], fmt, evidence,
                                 None if documents is None else [documents[i] for i in group])
            for key, group in groups.items()}
