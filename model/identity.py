"""Identities: what one end of an edge is, at the granularity a NetworkPolicy can name it.

Pods are folded into their workload (the synthesizer writes one policy per workload); nodes stand
for node addresses, host-network pods and traffic SNATed to a node; an external IP or an unknown
cluster IP stays an address. ``key`` is the natural key the store deduplicates on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from netpol_gen.model.bounds import AddressText, NamespaceName, ObjectName, WorkloadKind
from netpol_gen.model.cluster import Pod


class IdentityKind(Enum):
    POD = "pod"  # a workload's pods
    NODE = "node"
    EXTERNAL = "external"
    UNKNOWN = "unknown"  # a pod-network address held by no known pod at the time


_POD, _NODE = IdentityKind.POD, IdentityKind.NODE
_PREFIX = {kind: f"{kind.value}:" for kind in IdentityKind}  # enum .value is a descriptor call per read


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """Equal and hashed by :attr:`key`, computed once: identities key every aggregation dictionary."""

    kind: IdentityKind
    namespace: NamespaceName | None = None
    workload_kind: WorkloadKind | None = None
    workload_name: ObjectName | None = None
    node: ObjectName | None = None
    ip: AddressText | None = None
    key: str = field(init=False, repr=False, default="")  # the default lets a decoder leave it out

    def __post_init__(self) -> None:
        # The natural key, computed here without a method call: every identity a collector batch carries
        # (two per edge) runs this while ``serve`` decodes it.
        kind = self.kind
        if kind is _POD:
            key = f"pod:{self.namespace}/{self.workload_kind}/{self.workload_name}"
        elif kind is _NODE:
            key = f"node:{self.node}"
        else:
            key = f"{_PREFIX[kind]}{self.ip}"
        object.__setattr__(self, "key", key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def of_pod(cls, pod: Pod) -> Identity:
        return cls(IdentityKind.POD, pod.namespace, pod.workload.kind, pod.workload.name)

    @classmethod
    def of_node(cls, name: str) -> Identity:
        return cls(IdentityKind.NODE, node=name)

    @classmethod
    def of_address(cls, kind: IdentityKind, ip: str) -> Identity:
        return cls(kind, ip=ip)

    def describe(self) -> str:
        if self.kind is IdentityKind.POD:
            return f"{self.namespace}/{self.workload_kind}/{self.workload_name}"
        if self.kind is IdentityKind.NODE:
            return f"node/{self.node}"
        return f"{self.kind.value}/{self.ip}"
