"""Identities: what one end of an edge is, at the granularity a NetworkPolicy can name it.

Pods are folded into their workload (the synthesizer writes one policy per workload); nodes stand
for node addresses, host-network pods and traffic SNATed to a node; an external IP or an unknown
cluster IP stays an address. ``key`` is the natural key the store deduplicates on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from netpol_gen.evaluator.cluster import Pod


class IdentityKind(Enum):
    POD = "pod"  # a workload's pods
    NODE = "node"
    EXTERNAL = "external"
    UNKNOWN = "unknown"  # a pod-network address held by no known pod at the time


@dataclass(frozen=True, slots=True)
class Identity:
    kind: IdentityKind
    namespace: str | None = None
    workload_kind: str | None = None
    workload_name: str | None = None
    node: str | None = None
    ip: str | None = None

    @classmethod
    def of_pod(cls, pod: Pod) -> Identity:
        return cls(IdentityKind.POD, pod.namespace, pod.workload.kind, pod.workload.name)

    @classmethod
    def of_node(cls, name: str) -> Identity:
        return cls(IdentityKind.NODE, node=name)

    @classmethod
    def of_address(cls, kind: IdentityKind, ip: str) -> Identity:
        return cls(kind, ip=ip)

    @property
    def key(self) -> str:
        if self.kind is IdentityKind.POD:
            return f"pod:{self.namespace}/{self.workload_kind}/{self.workload_name}"
        if self.kind is IdentityKind.NODE:
            return f"node:{self.node}"
        return f"{self.kind.value}:{self.ip}"

    def describe(self) -> str:
        if self.kind is IdentityKind.POD:
            return f"{self.namespace}/{self.workload_kind}/{self.workload_name}"
        if self.kind is IdentityKind.NODE:
            return f"node/{self.node}"
        return f"{self.kind.value}/{self.ip}"
