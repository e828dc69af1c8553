"""Replay recorded flows against a policy set and tally the outcome (what ``check`` reports)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.verdict import FlowVerdict, Verdict


@dataclass
class ReplaySummary:
    """Counts over a replay. ``by_policy`` counts, per policy, the flows it admitted on some side
    (``admitted``) and the denied flows on a side it isolates (``denied``)."""

    flows: int = 0
    allowed: int = 0
    denied: int = 0
    via_service: int = 0
    admitted_by_policy: Counter[str] = field(default_factory=Counter)
    denied_by_policy: Counter[str] = field(default_factory=Counter)

    def add(self, result: FlowVerdict) -> None:
        self.flows += 1
        if result.service is not None:
            self.via_service += 1
        if result.allowed:
            self.allowed += 1
        else:
            self.denied += 1
        admitted: set[str] = set()
        denying: set[str] = set()
        for verdict in result.verdicts:
            for side in (verdict.egress, verdict.ingress):
                if side.allowed:
                    admitted.update(ref.policy for ref in side.admitted_by)
                else:
                    denying.update(side.isolating)
        self.admitted_by_policy.update(admitted)
        self.denied_by_policy.update(denying)

    def to_dict(self) -> dict[str, Any]:
        policies = sorted(set(self.admitted_by_policy) | set(self.denied_by_policy))
        return {
            "flows": self.flows,
            "allowed": self.allowed,
            "denied": self.denied,
            "via_service": self.via_service,
            "by_policy": {
                name: {"admitted": self.admitted_by_policy[name], "denied": self.denied_by_policy[name]}
                for name in policies
            },
        }


def replay(
    evaluator: Evaluator, flows: Iterable[Any], on_result: Callable[[FlowVerdict], None] | None = None
) -> ReplaySummary:
    """Judge every flow in order, tallying into a summary; ``on_result`` sees each verdict."""
    summary = ReplaySummary()
    for result in iter_verdicts(evaluator, flows):
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return summary


def iter_verdicts(evaluator: Evaluator, flows: Iterable[Any]) -> Iterator[FlowVerdict]:
    judge = evaluator.judge_flow
    for flow in flows:
        yield judge(flow)


def verdict_to_dict(verdict: Verdict, *, explain: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "src": verdict.src.describe(),
        "dst": verdict.dst.describe(),
        "port": verdict.port,
        "protocol": verdict.protocol,
        "allowed": verdict.allowed,
        "egress": verdict.egress.to_dict(),
        "ingress": verdict.ingress.to_dict(),
    }
    if not explain:
        for side in ("egress", "ingress"):
            record[side].pop("admitted_by")
    return record


def flow_verdict_to_dict(result: FlowVerdict, *, explain: bool) -> dict[str, Any]:
    """One flow's verdict as JSON: allowed, both sides' reasons, per backend for a Service."""
    flow = result.flow
    record: dict[str, Any] = {
        "flow": {
            "src_ip": flow.src_ip,
            "src_port": flow.src_port,
            "dst_ip": flow.dst_ip,
            "dst_port": flow.dst_port,
            "protocol": flow.protocol,
            "ts": flow.ts,
        },
        "allowed": result.allowed,
    }
    if result.service is not None:
        record["service"] = result.service.service.key
    verdicts = [verdict_to_dict(v, explain=explain) for v in result.verdicts]
    if len(verdicts) == 1:
        record.update({k: verdicts[0][k] for k in ("src", "dst", "port", "egress", "ingress")})
    else:
        record["backends"] = verdicts
    return record
