"""Verdicts with their reasons: which side judged a connection, which policies isolate it, and which
policy rules admitted it. Plain data, so ``check`` can print it as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from netpol_gen.model.cluster import Endpoint, ServiceTarget
from netpol_gen.model.flows import Flow


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Rule ``index`` (0-based) of the ingress or egress list of policy ``policy`` (ns/name)."""

    policy: str
    index: int

    def __str__(self) -> str:
        return f"{self.policy}#{self.index}"


class Basis(Enum):
    """Why one side decided as it did."""

    NOT_A_POD = "not a pod"  # external IP, node, unknown address: policies only apply to pods
    SAME_POD = "same pod"  # a pod talking to itself is always allowed
    OWN_NODE = "own node"  # traffic between a pod and the node it runs on is always allowed
    NOT_ISOLATED = "not isolated"  # no policy selects the pod for this direction
    RULE = "allowed by rule"
    NO_RULE = "no rule allows it"
    DENY_RULE = "denied by rule"  # a Cilium deny section or a Calico Deny rule matched
    PASS = "passed"  # a Calico Pass rule matched: the policies after it are skipped, the profile allows


DENYING = (Basis.NO_RULE, Basis.DENY_RULE)


@dataclass(frozen=True, slots=True)
class SideVerdict:
    """One direction's judgement: the source's egress or the destination's ingress."""

    direction: str  # "Egress" or "Ingress"
    basis: Basis
    isolating: tuple[str, ...] = ()
    admitted_by: tuple[RuleRef, ...] = ()
    denied_by: tuple[RuleRef, ...] = ()  # with DENY_RULE: the rules that denied it

    @property
    def allowed(self) -> bool:
        return self.basis not in DENYING

    @property
    def isolated(self) -> bool:
        return bool(self.isolating)

    def reason(self) -> str:
        if self.basis is Basis.RULE:
            return f"allowed by {', '.join(str(r) for r in self.admitted_by)}"
        if self.basis is Basis.NO_RULE:
            return f"isolated by {', '.join(self.isolating)} and no rule allows it"
        if self.basis is Basis.DENY_RULE:
            return f"denied by {', '.join(str(r) for r in self.denied_by)}"
        if self.basis is Basis.PASS:
            return f"passed by {', '.join(str(r) for r in self.admitted_by)}"
        if self.basis is Basis.NOT_ISOLATED:
            return f"not isolated for {self.direction.lower()}"
        return self.basis.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "basis": self.basis.name.lower(),
            "isolating_policies": list(self.isolating),
            "admitted_by": [str(r) for r in self.admitted_by],
            "reason": self.reason(),
        } | ({"denied_by": [str(r) for r in self.denied_by]} if self.denied_by else {})


class _BothSides:
    """What a judgement with an ``egress`` and an ``ingress`` side says of both."""

    __slots__ = ()
    egress: SideVerdict
    ingress: SideVerdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed


@dataclass(frozen=True, slots=True)
class Verdict(_BothSides):
    """A connection from ``src`` to ``dst`` on ``port``/``protocol``: allowed iff both sides allow it."""

    src: Endpoint
    dst: Endpoint
    port: int
    protocol: str
    egress: SideVerdict
    ingress: SideVerdict

    def denied_sides(self) -> list[str]:
        return [side.direction for side in (self.egress, self.ingress) if not side.allowed]

    def reason(self) -> str:
        if self.allowed:
            return f"egress: {self.egress.reason()}; ingress: {self.ingress.reason()}"
        return "; ".join(
            f"{side.direction.lower()} of {end.describe()} denied: {side.reason()}"
            for side, end in ((self.egress, self.src), (self.ingress, self.dst))
            if not side.allowed
        )


@dataclass(frozen=True, slots=True)
class Judged(_BothSides):
    """A verdict less its source, and less its destination when that is the connection's own (``dst``
    None; a Service backend's end otherwise): what the connections whose ends are judged alike
    share (:meth:`Evaluator.judge_alike`), so that ``check`` encodes and tallies it once for them all."""

    dst: Endpoint | None
    port: int
    protocol: str
    egress: SideVerdict
    ingress: SideVerdict

    def verdict(self, src: Endpoint, dst: Endpoint | None) -> Verdict:
        """The verdict of the connection from ``src`` to ``dst`` (None only for a backend's)."""
        end = self.dst if self.dst is not None else dst
        if end is None:
            raise ValueError("the judgement of a connection's own destination needs that destination")
        return Verdict(src, end, self.port, self.protocol, self.egress, self.ingress)


@dataclass(frozen=True, slots=True)
class FlowVerdict:
    """A recorded flow judged. A flow to a Service address is judged once per backend pod (the
    connection may land on any of them), and is allowed only if every backend admits it."""

    flow: Flow
    verdicts: tuple[Verdict, ...]
    service: ServiceTarget | None = None

    @property
    def allowed(self) -> bool:
        return all(v.allowed for v in self.verdicts)

    @property
    def denied(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.allowed)
