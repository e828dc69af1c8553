"""Replay a JSONL flow file connection by connection: what ``check`` runs, at the speed of reading.

A capture repeats the same connections over and over, and a flow's verdicts depend only on its
addresses, port and protocol and on what each address stood for at its time (see
:func:`netpol_gen.evaluator.replay.iter_verdicts`), which changes only at the instants
:meth:`Cluster.change_times` gives for that address (for the source, only ever an end,
:meth:`Cluster.end_change_times`). So each line is decoded against the boundary
schema (:data:`netpol_gen.model.flows.DECODER`, no Flow built) and grouped by (src, dst, dst_port,
protocol) and the stretch between two such instants of each address; for the first flow of a group
its ends are resolved once per address and stretch and judged by :meth:`Evaluator.judge_alike`
(what :meth:`Evaluator.judge_flow` does after its lookups, less the ends: one judgement for all the
connections whose ends are alike), once per distinct pair of ends; the other flows add one to its
count, most of them after two comparisons with their connection's latest stretch. Groups judged alike
between the same ends (the same Service) share one record; no Verdict is built unless the connections
are kept. Per-flow JSONL output is the group's record (what
:func:`~netpol_gen.evaluator.replay.flow_verdict_to_dict` gives), encoded once per judgement as a
template of per-side fragments and filled with the ends' descriptions once per group, with the
flow's own addresses, ports and time spliced in, written as bytes in batches. Counts are folded into the
summary when groups are dropped (memory is bounded by
:data:`~netpol_gen.model.cluster.LOOKUP_CACHE_LIMIT` connections, not by the number of flows) and at
the end.

Validation is the reader's (:func:`netpol_gen.model.flows.iter_flows`): the same checks, the same
messages, ``FILE:line N``, ``skip_bad`` counting; addresses are checked once per connection, the
timestamp bound once per flow.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TypeVar

import msgspec

from netpol_gen.errors import FlowError
from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.replay import ReplaySummary
from netpol_gen.evaluator.verdict import FlowVerdict, Judged, SideVerdict, Verdict
from netpol_gen.gc_pause import collector_paused
from netpol_gen.model.bounds import horizon
from netpol_gen.model.cluster import (
    LOOKUP_CACHE_LIMIT,
    Cluster,
    Endpoint,
    EndpointKind,
    Pod,
    ServiceTarget,
    remember,
)
from netpol_gen.model.flows import (
    DECODER,
    MAX_LINE,
    Flow,
    FlowReadStats,
    FlowRecord,
    bounded_lines,
    canonical_addresses,
    decode_record,
    too_late,
)

WRITE_EVERY = 8192  # pieces (two per JSONL line) per write: one write per line costs more than encoding the line
_T = TypeVar("_T")


@dataclass(slots=True)
class _Group:
    """Flows judged alike between the same ends: their judgement (:meth:`Evaluator.judge_alike`, shared
    with other ends alike) and Service, their ends, the first flow (its FlowVerdict is built only if
    the connections are kept), the JSONL tail (only if written), how many."""

    judged: tuple[Judged, ...]
    service: ServiceTarget | None
    src_end: Endpoint
    dst_end: Endpoint | None  # None: behind a Service with backends (each Judged names its own)
    src: str  # the first flow: its canonical addresses and its record (no cycle through its _Connection)
    dst: str
    record: FlowRecord
    tail: bytes  # ',"allowed":...}' + newline: everything after the flow's own fields
    flows: int = 0

    def verdicts(self) -> tuple[Verdict, ...]:
        return tuple(j.verdict(self.src_end, self.dst_end) for j in self.judged)


@dataclass(slots=True)
class _Connection:
    """One (src, dst, dst_port, protocol) as written in the file; ``head``/``middle`` frame a
    flow's src_port and ts in its JSONL record. ``group`` is the group of its latest flow, valid
    for the times in [``low``, ``high``): a capture is read in time order, so most flows land
    there and cost two comparisons."""

    src: str  # canonical addresses
    dst: str
    head: str
    middle: str
    src_times: list[float]  # the stretches judged alike: Cluster.end_change_times of the source (only
    # ever an end), Cluster.change_times of the destination (an end or a Service address)
    dst_times: list[float]
    groups: dict[tuple[int, int], _Group] = field(default_factory=dict)
    group: _Group | None = None
    low: float = 0.0
    high: float = 0.0  # empty: no stretch yet


@dataclass
class StreamedReplay:
    """What :func:`replay_stream` found: the summary, and each distinct judged connection (its first
    flow's verdicts) with its number of flows."""

    summary: ReplaySummary = field(default_factory=ReplaySummary)
    connections: list[tuple[FlowVerdict, int]] = field(default_factory=list)


def _quoted(ip: str) -> str:
    """A canonical address as a JSON string: digits, hex, dots and colons need no escaping (a scope
    id after ``%`` might)."""
    return f'"{ip}"' if "%" not in ip else json.dumps(ip)


def _connection(record: FlowRecord, cluster: Cluster) -> _Connection:
    src, dst = canonical_addresses(record.src_ip, record.dst_ip)
    return _Connection(
        src=src, dst=dst,
        src_times=cluster.end_change_times(src),
        dst_times=cluster.change_times(dst),
        head=f'{{"flow":{{"src_ip":{_quoted(src)},"src_port":',
        middle=(f',"dst_ip":{_quoted(dst)},"dst_port":{record.dst_port},'
                f'"protocol":"{record.protocol.upper()}","ts":'),
    )


def _stretch(times: list[float], slot: int) -> tuple[float, float]:
    """The times [low, high) that bisect_right puts in ``slot`` of ``times``."""
    return (times[slot - 1] if slot else -math.inf), (times[slot] if slot < len(times) else math.inf)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


_PLAIN_ADDRESS = re.compile(r"[0-9A-Fa-f.:]+").fullmatch  # what a JSON string holds unescaped
_SRC, _DST = "\x00src\x00", "\x00dst\x00"  # a template's ends: encoded JSON never holds a raw NUL


def _flow(group: _Group) -> Flow:
    """What :func:`~netpol_gen.model.flows.flow_from_record` gives for the group's first flow, whose
    addresses its connection has checked and canonicalised (and whose ``ts`` ``new_group`` has checked)."""
    record = group.record
    return Flow(src_ip=group.src, dst_ip=group.dst, dst_port=record.dst_port,
                protocol=record.protocol.upper(), src_port=record.src_port,
                ts=float(record.ts) if record.ts is not None else None,
                packets=record.packets, bytes=record.bytes, answered=record.answered)


class _Fragments:
    """The JSONL tail of a judged flow (what :func:`flow_verdict_to_dict` gives, less the flow, encoded
    as ``json.dumps`` with compact separators encodes it) assembled from encoded pieces: each side
    verdict and each pod's description is encoded once, not once per connection, and each judgement
    once as a template (a few thousand for a million flows, shared by the ends judged alike), so a
    tail costs two string replacements."""

    def __init__(self, explain: bool) -> None:
        self.explain = explain
        self._sides: dict[int, tuple[SideVerdict, str]] = {}  # by id, the object kept so the id stays its own
        self._pods: dict[int, tuple[Pod, str]] = {}
        self._strings: dict[str, str] = {}  # Service keys and protocols, a few of each
        # by the judgement's id (kept, so the id stays its own) and Service: the tail with placeholders
        self._templates: dict[tuple[int, str | None], tuple[tuple[Judged, ...], str]] = {}

    def string(self, text: str) -> str:
        found = self._strings.get(text)
        return remember(self._strings, text, json.dumps(text)) if found is None else found

    def side(self, side: SideVerdict) -> str:
        found = self._sides.get(id(side))
        if found is None or found[0] is not side:
            record = side.to_dict()
            if not self.explain:
                record.pop("admitted_by")
            found = remember(self._sides, id(side), (side, _dumps(record)))
        return found[1]

    def end(self, endpoint: Endpoint) -> str:
        pod = endpoint.pod
        if pod is None:
            if endpoint.node is None and endpoint.kind is not EndpointKind.UNKNOWN_CLUSTER_IP \
                    and _PLAIN_ADDRESS(endpoint.ip):
                return f'"{endpoint.ip}"'  # describe() is the address: no encoder for each of countless addresses
            return _dumps(endpoint.describe())
        found = self._pods.get(id(pod))
        if found is None or found[0] is not pod:
            found = remember(self._pods, id(pod), (pod, _dumps(pod.describe())))
        return found[1]

    def tail(self, judged: tuple[Judged, ...], target: ServiceTarget | None, src: Endpoint,
             dst: Endpoint | None) -> str:
        """'"allowed":...}' and a newline: everything of the record after the flow's own fields; the
        template of ``judged`` (shared by the ends judged alike) with the ends' descriptions put in."""
        key = (id(judged), target.service.key if target is not None else None)
        found = self._templates.get(key)
        if found is None or found[0] is not judged:
            found = remember(self._templates, key, (judged, self._template(judged, target)))
        text = found[1].replace(_SRC, self.end(src))
        return text.replace(_DST, self.end(dst)) if dst is not None else text

    def _template(self, judged: tuple[Judged, ...], target: ServiceTarget | None) -> str:
        service = f',"service":{self.string(target.service.key)}' if target is not None else ""
        head = f',"allowed":{"true" if all(j.allowed for j in judged) else "false"}{service}'
        ends = [self.end(j.dst) if j.dst is not None else _DST for j in judged]
        if len(judged) == 1:
            j = judged[0]
            return (f'{head},"src":{_SRC},"dst":{ends[0]},"port":{j.port},'
                    f'"egress":{self.side(j.egress)},"ingress":{self.side(j.ingress)}}}\n')
        backends = ",".join(
            f'{{"src":{_SRC},"dst":{end},"port":{j.port},"protocol":{self.string(j.protocol)},'
            f'"allowed":{"true" if j.allowed else "false"},"egress":{self.side(j.egress)},'
            f'"ingress":{self.side(j.ingress)}}}' for j, end in zip(judged, ends, strict=True))
        return f'{head},"backends":[{backends}]}}\n'


class _Stretches:
    """What each address stood for in each of its stretches (:meth:`Cluster.change_times`), looked
    up once per address and stretch, and the verdicts of each resolved connection, judged once:
    a new connection between known ends, or a known one in a new stretch in which its ends stand
    for the same pods, costs dictionary lookups, not a resolution and a judgement. Endpoints and
    Service targets are shared by content (a Service address's stretches change with every pod of
    its namespace, its backends rarely), so connections judged alike find one another by identity."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.cluster = evaluator.cluster
        self._ends: dict[tuple[str, int, bool], Endpoint] = {}  # by slot of the source's or destination's times
        self._targets: dict[tuple[str, int, str, int], ServiceTarget | None] = {}
        self._alike: dict[object, object] = {}
        # by the ends' ids (the ends are kept in the value, so those ids stay theirs)
        self._judged: dict[tuple[int, int, int, int, str],
                           tuple[Endpoint, ServiceTarget | None, Endpoint | None, tuple[Judged, ...]]] = {}

    def _same(self, found: _T) -> _T:
        alike = self._alike.get(found)
        return remember(self._alike, found, found) if alike is None else alike  # type: ignore[return-value]

    def end(self, ip: str, slot: int, source: bool, ts: float | None) -> Endpoint:
        key = (ip, slot, source)
        found = self._ends.get(key)
        if found is None:
            found = remember(self._ends, key, self._same(self.cluster.endpoint(ip, ts)))
        return found

    def target(self, ip: str, port: int, protocol: str, slot: int, ts: float | None) -> ServiceTarget | None:
        key = (ip, port, protocol, slot)
        if key in self._targets:
            return self._targets[key]
        found = self.cluster.service_target(ip, port, protocol, ts)
        return remember(self._targets, key, None if found is None else self._same(found))

    def judge(self, connection: _Connection, port: int, protocol: str, slot: tuple[int, int], ts: float | None,
              ) -> tuple[Endpoint, ServiceTarget | None, Endpoint | None, tuple[Judged, ...]]:
        """The ends of ``connection``'s flows in the stretches ``slot`` (the source, the Service target,
        the destination unless behind that target's backends) and their judgement."""
        src = self.end(connection.src, slot[0], True, ts)
        target = self.target(connection.dst, port, protocol, slot[1], ts)
        behind = target is not None and (target.backends or target.others)
        dst = None if behind else self.end(connection.dst, slot[1], False, ts)
        key = (id(src), id(target), id(dst), port, protocol)
        found = self._judged.get(key)
        if found is None or found[0] is not src or found[1] is not target or found[2] is not dst:
            judged = self.evaluator.judge_alike(src, target, dst, connection.dst, port, protocol, ts)
            found = remember(self._judged, key, (src, target, dst, judged))
        return found


def replay_stream(
    evaluator: Evaluator, stream: IO[bytes], name: str, *, skip_bad: bool = False,
    stats: FlowReadStats | None = None, write: Callable[[bytes], object] | None = None, explain: bool = False,
    keep_connections: bool = True,
) -> StreamedReplay:
    """Judge every flow of a JSONL stream; with ``write``, also write one verdict per flow (UTF-8), in
    input order, as ``check --format jsonl`` prints it (lines before a bad line are written before it raises).
    Without ``keep_connections`` the result's ``connections`` stay empty and no FlowVerdict is built
    (``check --format jsonl`` reports the summary only: ~160k objects fewer on the issue15 preset).

    The cyclic garbage collector is paused meanwhile: the replay's objects (records, groups, cached
    verdicts, all bounded) make no cycles, and each collection would traverse the snapshot's and the
    policies' heap for nothing (measured: 6.5 -> 3.8 CPU s on the issue15 preset's 80k external flows)."""
    with collector_paused():
        return _replay(evaluator, stream, name, skip_bad=skip_bad, stats=stats, write=write, explain=explain,
                       keep_connections=keep_connections)


def _replay(
    evaluator: Evaluator, stream: IO[bytes], name: str, *, skip_bad: bool,
    stats: FlowReadStats | None, write: Callable[[bytes], object] | None, explain: bool, keep_connections: bool,
) -> StreamedReplay:
    stats = stats if stats is not None else FlowReadStats()
    out = StreamedReplay()
    latest = horizon()
    cluster = evaluator.cluster
    stretches = _Stretches(evaluator)
    decode = DECODER.decode
    connections: dict[tuple[str, str, int, str], _Connection] = {}
    # one group per outcome: the same connection in another stretch, judged alike between the same ends,
    # joins its group (keyed by ids: the group holds its judgement and ends, so those ids stay theirs)
    groups: dict[tuple[int, int, int, str | None], _Group] = {}
    fragments = _Fragments(explain)
    pending: list[bytes] = []

    def fold() -> None:
        for group in groups.values():
            out.summary.add_verdicts(group.judged, group.service is not None, group.flows)
            if keep_connections:
                result = FlowVerdict(_flow(group), group.verdicts(), group.service)
                out.connections.append((result, group.flows))
        connections.clear()
        groups.clear()

    def flush() -> None:
        if write is not None and pending:
            write(b"".join(pending))
            pending.clear()

    def new_group(connection: _Connection, record: FlowRecord, ts: float | None) -> _Group:
        """The group of a flow outside its connection's latest stretch (raises on a late ``ts``)."""
        if ts is None:
            slot = (-1, -1)
        else:
            if ts > latest:
                raise too_late(ts)
            src_slot, dst_slot = bisect_right(connection.src_times, ts), bisect_right(connection.dst_times, ts)
            slot = (src_slot, dst_slot)
        group = connection.groups.get(slot)
        if group is None:
            protocol = record.protocol.upper()
            src, target, dst, judged = stretches.judge(connection, record.dst_port, protocol, slot, ts)
            outcome = (id(judged), id(src), id(dst), target.service.key if target is not None else None)
            group = groups.get(outcome)
            if group is None:
                tail = fragments.tail(judged, target, src, dst).encode() if write is not None else b""
                group = groups[outcome] = _Group(judged, target, src, dst, connection.src, connection.dst, record,
                                                 tail)
            connection.groups[slot] = group
        if ts is not None:
            src_low, src_high = _stretch(connection.src_times, slot[0])
            dst_low, dst_high = _stretch(connection.dst_times, slot[1])
            # ts == latest is still allowed but takes this path, which checks it
            connection.low, connection.high = max(src_low, dst_low), min(src_high, dst_high, latest)
            connection.group = group
        return group

    number = 0
    for number, line in enumerate(bounded_lines(stream), 1):
        try:
            if line is None:
                raise FlowError(f"line longer than {MAX_LINE} bytes")
            try:
                record = decode(line)
            except (msgspec.MsgspecError, RecursionError):
                if not line.strip():
                    continue
                record = decode_record(line)  # raises with the worded message
            key = (record.src_ip, record.dst_ip, record.dst_port, record.protocol)
            connection = connections.get(key)
            if connection is None:
                if len(connections) >= LOOKUP_CACHE_LIMIT:
                    fold()
                connection = connections[key] = _connection(record, cluster)
            ts = record.ts
            group = connection.group
            if group is None or ts is None or not connection.low <= ts < connection.high:
                group = new_group(connection, record, ts)
        except FlowError as exc:
            if skip_bad:
                stats.skipped += 1
                continue
            stats.lines = number
            flush()
            raise FlowError(exc.what, where=f"{name}:line {number}") from None
        group.flows += 1
        stats.flows += 1
        if write is not None:
            sport = record.src_port
            pending.append(f"{connection.head}{'null' if sport is None else sport}{connection.middle}"
                           f"{'null' if ts is None else repr(float(ts))}}}".encode())
            pending.append(group.tail)
            if len(pending) >= WRITE_EVERY:
                flush()
    stats.lines = number
    flush()
    fold()
    return out
