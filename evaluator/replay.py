"""Replay recorded flows against a policy set and tally the outcome (what ``check`` reports)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.verdict import FlowVerdict, Judged, SideVerdict, Verdict
from netpol_gen.model.cluster import remember

_Tally = tuple[tuple[SideVerdict, ...], bool, frozenset[str], frozenset[str]]


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
    # per sequence of side verdicts (by id; the sides are kept so those ids stay theirs): whether the
    # flow is allowed and the policies it credits, which depend on the sides alone; the evaluator
    # shares side objects among connections, so this is worked out a few thousand times per run
    _tallies: dict[tuple[int, ...], _Tally] = field(default_factory=dict, repr=False, compare=False)

    def add(self, result: FlowVerdict, flows: int = 1) -> None:
        """Count ``flows`` flows judged as ``result`` (flows of one connection share its verdicts)."""
        self.add_verdicts(result.verdicts, result.service is not None, flows)

    def add_verdicts(self, verdicts: tuple[Verdict, ...] | tuple[Judged, ...], via_service: bool, flows: int) -> None:
        """:meth:`add` for flows whose FlowVerdict is not built (``check --format jsonl`` keeps none): their
        verdicts, or their judgement less the ends (the same sides)."""
        self.flows += flows
        if via_service:
            self.via_service += flows
        sides = tuple(side for verdict in verdicts for side in (verdict.egress, verdict.ingress))
        key = tuple(map(id, sides))
        tally = self._tallies.get(key)
        if tally is None:
            allowed = all(side.allowed for side in sides)
            tally = remember(self._tallies, key, (sides, allowed, *_policies_credited(sides)))
        if tally[1]:
            self.allowed += flows
        else:
            self.denied += flows
        # plain increments: Counter.update's Mapping check costs more than the counting itself
        admitted, denied = self.admitted_by_policy, self.denied_by_policy
        for name in tally[2]:
            admitted[name] += flows
        for name in tally[3]:
            denied[name] += flows

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


def _policies_credited(sides: tuple[SideVerdict, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """The policies that admitted some of these sides, and those isolating a denied one."""
    admitted: set[str] = set()
    denying: set[str] = set()
    for side in sides:
        if side.allowed:
            admitted.update(ref.policy for ref in side.admitted_by)
        else:
            denying.update(side.isolating)
            denying.update(ref.policy for ref in side.denied_by)
    return frozenset(admitted), frozenset(denying)


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
    """Judge each flow. A flow's verdicts depend only on its addresses, port and protocol and on
    which pods held their IPs at its time (the cluster's epoch); a capture repeats the same
    connections over and over, so a repeat reuses the first flow's verdicts and Service target
    (the very objects ``judge_flow`` would return, as the evaluator caches them) instead of
    resolving addresses and judging again."""
    judge = evaluator.judge_flow
    epoch = evaluator.cluster.epoch
    seen: dict[tuple[str, str, int, str, int], FlowVerdict] = {}
    for flow in flows:
        key = (flow.src_ip, flow.dst_ip, flow.dst_port, flow.protocol, epoch(flow.ts))
        first = seen.get(key)
        if first is None:
            yield remember(seen, key, judge(flow))
        else:
            yield FlowVerdict(flow, first.verdicts, first.service)


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
