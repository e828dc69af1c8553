"""Semantic impact of replacing the policies in force (A) by a proposed set (B), the half of
``netpol-gen diff`` that says what would actually happen to traffic.

Every recorded flow is replayed under both sets on the same cluster; the flows whose outcome flips are
grouped by workload pair x destination port/protocol, with the reasons both sets give (which policy
rules admit it, which policies isolate the side that denies it). A flow to a Service is judged per
backend, so the group names the backend workload and the targetPort, as a policy sees it.

Recorded traffic cannot show what B opens that nobody used yet, so :func:`compute_impact` also judges
workload pairs directly: one representative pod per workload, every container port the destination
declares. Only pairs where some side's governing policies differ between A and B can change, so only
those are judged, and a cap on the number of judgements keeps a large cluster tractable (the result
says when it was reached).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.evaluator.engine import EGRESS, INGRESS, Evaluator
from netpol_gen.evaluator.policy import NetworkPolicy
from netpol_gen.evaluator.replay import iter_verdicts
from netpol_gen.evaluator.verdict import FlowVerdict, SideVerdict, Verdict
from netpol_gen.model.cluster import Cluster, Endpoint, Pod
from netpol_gen.model.flows import Flow

DEFAULT_MAX_JUDGEMENTS = 200_000
PROTOCOLS = ("TCP", "UDP", "SCTP")


def endpoint_group(endpoint: Endpoint) -> str:
    """What a change is reported against: a pod's workload (``ns/Kind/name``), else the address."""
    pod = endpoint.pod
    return f"{pod.namespace}/{pod.workload}" if pod is not None else endpoint.describe()


@dataclass(frozen=True, slots=True, order=True)
class Connection:
    """A workload pair x destination port/protocol (the port as it reaches the destination pod)."""

    src: str
    dst: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} {self.protocol}/{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "port": self.port, "protocol": self.protocol}


def _side_reasons(verdict: Verdict, directions: Iterable[str]) -> set[str]:
    sides = {EGRESS: verdict.egress, INGRESS: verdict.ingress}
    return {f"{d.lower()}: {sides[d].reason()}" for d in directions}


def _responsible(side: SideVerdict) -> set[str]:
    """The rules that admit or deny (``policy#i``) or the policies that isolate a side."""
    if side.admitted_by or side.denied_by:
        return {str(ref) for ref in (*side.admitted_by, *side.denied_by)}
    return set(side.isolating)


@dataclass
class FlowChange:
    """Recorded flows of one connection whose outcome flips. ``now``/``proposed``: the reasons each set
    gives on the side(s) that flip; ``responsible``: the proposed set's policies or rules behind the
    new outcome (none when the side is simply no longer isolated)."""

    connection: Connection
    flows: int = 0
    services: set[str] = field(default_factory=set)
    now: set[str] = field(default_factory=set)
    proposed: set[str] = field(default_factory=set)
    responsible: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.connection.to_dict(),
            "flows": self.flows,
            "services": sorted(self.services),
            "now": sorted(self.now),
            "proposed": sorted(self.proposed),
            "responsible": sorted(self.responsible),
        }


@dataclass(frozen=True, slots=True)
class OpenedConnection:
    """A workload pair x declared port that B allows, A does not, and no recorded flow used."""

    connection: Connection
    port_name: str | None
    now: str
    proposed: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.connection.to_dict(), "port_name": self.port_name, "now": self.now, "proposed": self.proposed}


@dataclass
class Impact:
    """What replacing A by B does: ``breaking`` (allowed now, denied under B), ``opening`` (denied now,
    allowed under B), and ``opened`` (never observed, newly allowed); ``denied``: the observed
    connections some flow of which both sets deny (no change, but not allowed). ``judgements`` counts the
    workload-pair judgements made for ``opened``; ``truncated`` says the cap stopped them early."""

    flows: int = 0
    flows_broken: int = 0
    flows_opened: int = 0
    breaking: list[FlowChange] = field(default_factory=list)
    opening: list[FlowChange] = field(default_factory=list)
    opened: list[OpenedConnection] = field(default_factory=list)
    denied: list[Connection] = field(default_factory=list)
    workloads: int = 0
    affected_workloads: int = 0
    judgements: int = 0
    truncated: bool = False
    max_judgements: int = DEFAULT_MAX_JUDGEMENTS

    @property
    def has_changes(self) -> bool:
        return bool(self.breaking or self.opening or self.opened)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flows": self.flows,
            "flows_broken": self.flows_broken,
            "flows_newly_allowed": self.flows_opened,
            "breaking": [c.to_dict() for c in self.breaking],
            "newly_allowed": [c.to_dict() for c in self.opening],
            "newly_opened_unobserved": [c.to_dict() for c in self.opened],
            "unobserved_search": {
                "workloads": self.workloads,
                "affected_workloads": self.affected_workloads,
                "judgements": self.judgements,
                "max_judgements": self.max_judgements,
                "truncated": self.truncated,
            },
        }


# --- recorded flows ---------------------------------------------------------------------------------


_Flipped = list[tuple[Connection, set[str], set[str], set[str]]]


def _flipped(now: FlowVerdict, proposed: FlowVerdict) -> _Flipped:
    """The backend connections of one flow whose outcome differs, with the reasons on the sides that
    flip. Both results come from the same cluster, so their verdicts pair up backend by backend."""
    flipped: _Flipped = []
    for a, b in zip(now.verdicts, proposed.verdicts, strict=True):
        if a.allowed == b.allowed:
            continue
        pairs = ((EGRESS, a.egress, b.egress), (INGRESS, a.ingress, b.ingress))
        directions = [d for d, sa, sb in pairs if sa.allowed != sb.allowed]
        responsible = set().union(*(_responsible(sb) for d, _, sb in pairs if d in directions))
        connection = Connection(endpoint_group(a.src), endpoint_group(a.dst), a.port, a.protocol)
        flipped.append((connection, _side_reasons(a, directions), _side_reasons(b, directions), responsible))
    return flipped


class _FlowComparison:
    """Accumulates flips and the connections observed. Results of repeated flows share their verdict
    tuples (see :func:`iter_verdicts`), so the work per flow is a dictionary lookup; the tuples are
    kept alive so their ids stay theirs."""

    def __init__(self) -> None:
        self.impact = Impact()
        self.observed: set[Connection] = set()
        self._seen: dict[tuple[int, int], tuple[FlowVerdict, FlowVerdict, _Flipped]] = {}
        self._groups: dict[bool, dict[Connection, FlowChange]] = {True: {}, False: {}}
        self._denied: set[Connection] = set()

    def add(self, now: FlowVerdict, proposed: FlowVerdict) -> None:
        self.impact.flows += 1
        key = (id(now.verdicts), id(proposed.verdicts))
        known = self._seen.get(key)
        if known is None:
            known = (now, proposed, _flipped(now, proposed))
            self._seen[key] = known
            self.observed.update(Connection(endpoint_group(v.src), endpoint_group(v.dst), v.port, v.protocol)
                                 for v in now.verdicts)
            self._denied.update(Connection(endpoint_group(a.src), endpoint_group(a.dst), a.port, a.protocol)
                                for a, b in zip(now.verdicts, proposed.verdicts, strict=True)
                                if not a.allowed and not b.allowed)
        if now.allowed == proposed.allowed:
            return
        breaking = now.allowed
        if breaking:
            self.impact.flows_broken += 1
        else:
            self.impact.flows_opened += 1
        groups = self._groups[breaking]
        for connection, reasons_now, reasons_proposed, responsible in known[2]:
            group = groups.setdefault(connection, FlowChange(connection))
            group.flows += 1
            if now.service is not None:
                group.services.add(now.service.service.key)
            group.now |= reasons_now
            group.proposed |= reasons_proposed
            group.responsible |= responsible

    def finish(self) -> Impact:
        self.impact.breaking = sorted(self._groups[True].values(), key=lambda g: g.connection)
        self.impact.opening = sorted(self._groups[False].values(), key=lambda g: g.connection)
        self.impact.denied = sorted(self._denied)
        return self.impact


def _paired(now: Evaluator, proposed: Evaluator, flows: Iterable[Flow]) -> Iterator[tuple[FlowVerdict, FlowVerdict]]:
    """Each flow judged under both sets, reading the flows once (the two replays run in lockstep)."""
    first, second = itertools.tee(flows)
    return zip(iter_verdicts(now, first), iter_verdicts(proposed, second), strict=True)


# --- connectivity never observed --------------------------------------------------------------------


def representatives(cluster: Cluster) -> dict[str, Pod]:
    """One pod per workload that policies can apply to (not host-network, with an address): a live
    one when there is one, else the latest (a finished CronJob's Job pod stands for the next run)."""
    chosen: dict[str, Pod] = {}
    for pod in cluster.pods:
        if pod.host_network or not pod.ips:
            continue
        name = f"{pod.namespace}/{pod.workload}"
        best = chosen.get(name)
        if best is None or (pod.is_live, pod.created or 0.0, pod.name) > (best.is_live, best.created or 0.0,
                                                                          best.name):
            chosen[name] = pod
    return dict(sorted(chosen.items()))


def _governing(evaluator: Evaluator, pod: Pod, direction: str) -> set[tuple[Any, ...]]:
    """The policies that judge ``pod`` for ``direction``, as comparable values (policies compare by
    identity; their parsed content compares by value)."""
    return {_content(policy) for policy in evaluator.isolating(pod, direction)}


def _content(policy: NetworkPolicy) -> tuple[Any, ...]:
    return (policy.key, policy.pod_selector, policy.policy_types, policy.ingress, policy.egress)


def _declared_ports(pod: Pod) -> list[tuple[int, str, str | None]]:
    ports = {(p.port, p.protocol, p.name) for p in pod.container_ports if p.protocol in PROTOCOLS}
    return sorted(ports, key=lambda p: (p[1], p[0], p[2] or ""))


def find_opened(now: Evaluator, proposed: Evaluator, observed: set[Connection], impact: Impact) -> None:
    """Fill ``impact.opened``: workload pairs x declared ports that ``proposed`` allows, ``now`` denies
    and ``observed`` never used, judged on one representative pod per workload (bounded by
    ``impact.max_judgements``)."""
    pods = representatives(now.cluster)
    egress_changed = {name for name, pod in pods.items()
                      if _governing(now, pod, EGRESS) != _governing(proposed, pod, EGRESS)}
    ingress_changed = {name for name, pod in pods.items()
                       if _governing(now, pod, INGRESS) != _governing(proposed, pod, INGRESS)}
    impact.workloads, impact.affected_workloads = len(pods), len(egress_changed | ingress_changed)
    for (src_name, src_pod), (dst_name, dst_pod) in itertools.product(pods.items(), repeat=2):
        if src_name == dst_name or (src_name not in egress_changed and dst_name not in ingress_changed):
            continue
        src = Endpoint.of_pod(src_pod, src_pod.ips[0])
        dst = Endpoint.of_pod(dst_pod, src.ip)
        for port, protocol, name in _declared_ports(dst_pod):
            if impact.judgements >= impact.max_judgements:
                impact.truncated = True
                return
            impact.judgements += 1
            connection = Connection(src_name, dst_name, port, protocol)
            if connection in observed:
                continue
            after = proposed.judge(src, dst, port, protocol)
            if not after.allowed:
                continue
            before = now.judge(src, dst, port, protocol)
            if not before.allowed:
                impact.opened.append(OpenedConnection(connection, name, before.reason(), after.reason()))


def compute_impact(
    cluster: Cluster,
    current: Iterable[NetworkPolicy],
    proposed: Iterable[NetworkPolicy],
    flows: Iterable[Flow],
    *,
    max_judgements: int = DEFAULT_MAX_JUDGEMENTS,
) -> Impact:
    """Replay ``flows`` under the policies in force and the proposed ones, and search the workload
    pairs for connectivity the proposed set newly opens that no flow used."""
    now, after = Evaluator(cluster, current), Evaluator(cluster, proposed)
    comparison = _FlowComparison()
    for result_now, result_after in _paired(now, after, flows):
        comparison.add(result_now, result_after)
    impact = comparison.finish()
    impact.max_judgements = max_judgements
    find_opened(now, after, comparison.observed, impact)
    return impact
