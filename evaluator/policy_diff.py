"""Policy-by-policy comparison of two NetworkPolicy sets, the textual half of ``netpol-gen diff``.

Policies are matched by namespace/name and compared in a canonical form: the object as the API server
would store it (``policyTypes`` and port protocols defaulted, the namespace filled in as ``kubectl
apply`` would, empty lists and nulls omitted as Go's ``omitempty`` does) without what the server or
kubectl add on their own (resourceVersion, uid, managedFields, timestamps, status, the
last-applied-configuration annotation). A policy read from a file and the same policy read back from
the cluster therefore compare equal, and a change shows as a unified diff of keys-sorted YAML.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator.frontends import parse_any
from netpol_gen.evaluator.policy import POLICY_TYPES, NetworkPolicy
from netpol_gen.model.documents import Document, load_documents

VOLATILE_METADATA = (
    "resourceVersion",
    "uid",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class PolicyDocument:
    """A validated policy and its canonical object (see the module docstring)."""

    policy: NetworkPolicy
    obj: dict[str, Any]

    @property
    def key(self) -> str:
        return self.policy.key

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.obj, sort_keys=True, default_flow_style=False)


def _omit_empty(value: Any) -> Any:
    """Drop nulls and empty lists, recursively (an empty mapping such as ``podSelector: {}`` means
    "all pods" and is kept)."""
    if isinstance(value, dict):
        return {k: _omit_empty(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value


def _default_protocols(rules: Any) -> None:
    for rule in rules or []:
        for port in (rule or {}).get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def canonical(obj: dict[str, Any], policy: NetworkPolicy) -> dict[str, Any]:
    """The canonical form of ``obj``, which ``policy`` was parsed from (so it is known to be valid)."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_METADATA}
    if not policy.cluster_wide:
        metadata["namespace"] = policy.namespace
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != LAST_APPLIED}
    metadata["annotations"] = annotations or None
    spec = copy.deepcopy(obj.get("spec") or {})
    if policy.flavor:  # a CNI's policy: compared as written, with no API server defaults known here
        return _omit_empty({"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": metadata,
                            "spec": spec})
    spec["policyTypes"] = [t for t in POLICY_TYPES if t in policy.policy_types]
    spec.setdefault("podSelector", {})
    for direction in ("ingress", "egress"):
        _default_protocols(spec.get(direction))
    return _omit_empty(
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}
    )


def policy_documents(documents: Iterable[Document], *, default_namespace: str = "default") -> list[PolicyDocument]:
    """Parse and validate policies, keeping their canonical objects; another kind or a second policy
    of the same namespace/name is an error, as for :func:`~netpol_gen.evaluator.policy.load_policies`."""
    found: list[PolicyDocument] = []
    seen: dict[str, str] = {}
    for doc in documents:
        policy = parse_any(doc.obj, where=doc.where, default_namespace=default_namespace)
        if policy.key in seen:
            raise PolicyError(f"duplicate of the policy at {seen[policy.key]}", where=doc.where,
                              obj=f"policy {policy.key}")
        seen[policy.key] = doc.where
        found.append(PolicyDocument(policy, canonical(doc.obj, policy)))
    return found


def load_policy_documents(paths: Iterable[str]) -> list[PolicyDocument]:
    """The policies in NetworkPolicy files or directories (as ``check --policies`` reads them)."""
    return policy_documents(load_documents(paths, PolicyError))


class Change(Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PolicyChange:
    """One policy key and how it differs; ``diff`` is the unified diff of the canonical YAML (empty
    when unchanged), from the policy in force (``a/``) to the proposed one (``b/``)."""

    key: str
    change: Change
    diff: str

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.key, "change": self.change.value, "diff": self.diff}


@dataclass(frozen=True)
class PolicySetDiff:
    changes: tuple[PolicyChange, ...]  # sorted by policy key

    def of(self, change: Change) -> list[PolicyChange]:
        return [c for c in self.changes if c.change is change]

    @property
    def has_changes(self) -> bool:
        return any(c.change is not Change.UNCHANGED for c in self.changes)

    def counts(self) -> dict[str, int]:
        return {change.value: len(self.of(change)) for change in Change}


def _unified(key: str, before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"a/{key}" if before else "/dev/null",
        tofile=f"b/{key}" if after else "/dev/null",
    )
    return "".join(lines)


def diff_policy_sets(current: Sequence[PolicyDocument], proposed: Sequence[PolicyDocument]) -> PolicySetDiff:
    """Match policies by namespace/name: added (only proposed), removed (only in force), changed
    (canonical YAML differs) or unchanged."""
    before = {doc.key: doc.to_yaml() for doc in current}
    after = {doc.key: doc.to_yaml() for doc in proposed}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, ""), after.get(key, "")
        if key not in before:
            change = Change.ADDED
        elif key not in after:
            change = Change.REMOVED
        else:
            change = Change.UNCHANGED if old == new else Change.CHANGED
        changes.append(PolicyChange(key, change, _unified(key, old, new)))
    return PolicySetDiff(tuple(changes))
