"""What the synthesizer is asked to generate (scope, directions, folding of ports and addresses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """What to generate. ``namespaces`` empty means every namespace not in ``exclude_namespaces``.

    ``port_range_min`` None keeps every port separate: ``endPort`` needs Kubernetes 1.25 and a CNI
    that implements it (some silently ignore it), so ranges are opt-in. ``cidr_aggregate`` (IPv4) and
    ``cidr_aggregate_v6`` fold external IPs that share that prefix and the same ports into one ipBlock.
    ``dns_tcp``: a resolver seen on UDP port P is also allowed on TCP P, because a DNS answer too large
    for UDP is retried over TCP (RFC 7766); a policy with UDP alone breaks those lookups at random.
    ``fold``: exact folds (:mod:`.fold`): peers of a rule that differ in one label's value become one
    ``In`` peer, and rules with the same peers merge their ports; what the policies allow is the same
    for every pod, today's and later ones. ``fold_namespaces`` also writes peers that together select
    every pod of a namespace as that namespace: exact today, but it admits workloads created there later.
    """

    namespaces: frozenset[str] = frozenset()
    exclude_namespaces: frozenset[str] = frozenset({"kube-system"})
    since: float | None = None
    until: float | None = None
    min_connections: int = 1
    ingress_only: bool = False
    egress_only: bool = False
    default_deny: bool = False
    isolate_idle: bool = False
    include_unknown: bool = False
    named_ports: bool = True
    dns_tcp: bool = True
    port_range_min: int | None = None
    cidr_aggregate: int | None = None
    cidr_aggregate_v6: int | None = None
    fold: bool = True
    fold_namespaces: bool = False

    def __post_init__(self) -> None:
        if self.ingress_only and self.egress_only:
            raise ValueError("ingress_only and egress_only exclude each other")
        if self.port_range_min is not None and self.port_range_min < 2:
            raise ValueError("port_range_min must be at least 2")
        if self.cidr_aggregate is not None and not 0 < self.cidr_aggregate <= 32:
            raise ValueError("cidr_aggregate must be an IPv4 prefix length 1-32")
        if self.cidr_aggregate_v6 is not None and not 0 < self.cidr_aggregate_v6 <= 128:
            raise ValueError("cidr_aggregate_v6 must be an IPv6 prefix length 1-128")

    def in_scope(self, namespace: str) -> bool:
        """Whether workloads of ``namespace`` get policies."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        return namespace not in self.exclude_namespaces

    @property
    def directions(self) -> tuple[str, ...]:
        if self.ingress_only:
            return ("Ingress",)
        if self.egress_only:
            return ("Egress",)
        return ("Ingress", "Egress")
