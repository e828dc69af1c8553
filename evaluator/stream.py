"""Replay a JSONL flow file connection by connection: what ``check`` runs, at the speed of reading.

A capture repeats the same connections over and over, and a flow's verdicts depend only on its
addresses, port and protocol and on what each address stood for at its time (see
:func:`netpol_gen.evaluator.replay.iter_verdicts`), which changes only at the instants
:meth:`Cluster.change_times` gives for that address. So each line is decoded against the boundary
schema (:data:`netpol_gen.model.flows.DECODER`, no Flow built) and grouped by (src, dst, dst_port,
protocol) and the stretch between two such instants of each address; only the first flow of a group
is turned into a Flow and judged by :meth:`Evaluator.judge_flow`, the others add one to its count.
Groups judged alike (the same verdicts, the same Service) share one record. Per-flow JSONL output is
the group's record (what :func:`~netpol_gen.evaluator.replay.flow_verdict_to_dict` gives, encoded once
from per-side and per-pod fragments) with the
flow's own addresses, ports and time spliced in, written in batches. Counts are folded into the
summary when groups are dropped (memory is bounded by
:data:`~netpol_gen.model.cluster.LOOKUP_CACHE_LIMIT` connections, not by the number of flows) and at
the end.

Validation is the reader's (:func:`netpol_gen.model.flows.iter_flows`): the same checks, the same
messages, ``FILE:line N``, ``skip_bad`` counting; addresses are checked once per connection, the
timestamp bound once per flow.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import msgspec

from netpol_gen.errors import FlowError
from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.evaluator.replay import ReplaySummary
from netpol_gen.evaluator.verdict import FlowVerdict, SideVerdict
from netpol_gen.model.bounds import horizon
from netpol_gen.model.cluster import LOOKUP_CACHE_LIMIT, Cluster, Endpoint, Pod, remember
from netpol_gen.model.flows import (
    DECODER,
    MAX_LINE,
    FlowReadStats,
    FlowRecord,
    bounded_lines,
    canonical_addresses,
    decode_record,
    flow_from_record,
    too_late,
)

WRITE_EVERY = 4096  # JSONL lines per write: one write per line costs more than encoding the line


@dataclass(slots=True)
class _Group:
    """Flows of one connection in one epoch: the first one judged, its JSONL tail, how many."""

    result: FlowVerdict
    tail: str  # '"allowed":...}' + newline: everything after the flow's own fields
    flows: int = 0


@dataclass(slots=True)
class _Connection:
    """One (src, dst, dst_port, protocol) as written in the file; ``head``/``middle`` frame a
    flow's src_port and ts in its JSONL record."""

    head: str
    middle: str
    src_times: list[float]  # Cluster.change_times of each address: the stretches judged alike
    dst_times: list[float]
    groups: dict[tuple[int, int], _Group] = field(default_factory=dict)


@dataclass
class StreamedReplay:
    """What :func:`replay_stream` found: the summary, and each distinct judged connection (its first
    flow's verdicts) with its number of flows."""

    summary: ReplaySummary = field(default_factory=ReplaySummary)
    connections: list[tuple[FlowVerdict, int]] = field(default_factory=list)


def _connection(record: FlowRecord, cluster: Cluster) -> _Connection:
    src, dst = canonical_addresses(record.src_ip, record.dst_ip)
    return _Connection(
        src_times=cluster.change_times(src),
        dst_times=cluster.change_times(dst),
        head=f'{{"flow":{{"src_ip":{json.dumps(src)},"src_port":',
        middle=(f',"dst_ip":{json.dumps(dst)},"dst_port":{record.dst_port},'
                f'"protocol":{json.dumps(record.protocol.upper())},"ts":'),
    )


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Fragments:
    """The JSONL tail of a judged flow (what :func:`flow_verdict_to_dict` gives, less the flow, encoded
    as ``json.dumps`` with compact separators encodes it) assembled from encoded pieces: each side
    verdict and each pod's description is encoded once, not once per connection. Sides are the
    evaluator's cached objects (a few thousand for a million flows), so a tail costs a string join."""

    def __init__(self, explain: bool) -> None:
        self.explain = explain
        self._sides: dict[int, tuple[SideVerdict, str]] = {}  # by id, the object kept so the id stays its own
        self._pods: dict[int, tuple[Pod, str]] = {}

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
            return _dumps(endpoint.describe())
        found = self._pods.get(id(pod))
        if found is None or found[0] is not pod:
            found = remember(self._pods, id(pod), (pod, _dumps(pod.describe())))
        return found[1]

    def tail(self, result: FlowVerdict) -> str:
        """'"allowed":...}' and a newline: everything of the record after the flow's own fields."""
        service = f',"service":{_dumps(result.service.service.key)}' if result.service is not None else ""
        head = f',"allowed":{"true" if result.allowed else "false"}{service}'
        verdicts = result.verdicts
        if len(verdicts) == 1:
            v = verdicts[0]
            return (f'{head},"src":{self.end(v.src)},"dst":{self.end(v.dst)},"port":{v.port},'
                    f'"egress":{self.side(v.egress)},"ingress":{self.side(v.ingress)}}}\n')
        backends = ",".join(
            f'{{"src":{self.end(v.src)},"dst":{self.end(v.dst)},"port":{v.port},"protocol":{_dumps(v.protocol)},'
            f'"allowed":{"true" if v.allowed else "false"},"egress":{self.side(v.egress)},'
            f'"ingress":{self.side(v.ingress)}}}' for v in verdicts)
        return f'{head},"backends":[{backends}]}}\n'


def replay_stream(
    evaluator: Evaluator, stream: IO[bytes], name: str, *, skip_bad: bool = False,
    stats: FlowReadStats | None = None, write: Callable[[str], object] | None = None, explain: bool = False,
) -> StreamedReplay:
    """Judge every flow of a JSONL stream; with ``write``, also write one verdict per flow, in input
    order, as ``check --format jsonl`` prints it (lines before a bad line are written before it raises)."""
    stats = stats if stats is not None else FlowReadStats()
    out = StreamedReplay()
    latest = horizon()
    cluster = evaluator.cluster
    judge = evaluator.judge_flow
    decode = DECODER.decode
    connections: dict[tuple[str, str, int, str], _Connection] = {}
    # one group per outcome: the same connection in another epoch, judged alike, joins its group
    # (keyed by the verdicts' ids: the group holds its verdicts, so those ids stay theirs)
    groups: dict[tuple[tuple[int, ...], str | None], _Group] = {}
    fragments = _Fragments(explain)
    pending: list[str] = []

    def fold() -> None:
        for group in groups.values():
            out.summary.add(group.result, group.flows)
            out.connections.append((group.result, group.flows))
        connections.clear()
        groups.clear()

    def flush() -> None:
        if write is not None and pending:
            write("".join(pending))
            pending.clear()

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
            if ts is not None and ts > latest:
                raise too_late(ts)
            slot = (-1, -1) if ts is None else (bisect_right(connection.src_times, ts),
                                                bisect_right(connection.dst_times, ts))
            group = connection.groups.get(slot)
            if group is None:
                result = judge(flow_from_record(record, latest))
                outcome = (tuple(map(id, result.verdicts)), result.service.service.key if result.service else None)
                group = groups.get(outcome)
                if group is None:
                    group = groups[outcome] = _Group(result, fragments.tail(result))
                connection.groups[slot] = group
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
                           f"{'null' if ts is None else repr(float(ts))}}}{group.tail}")
            if len(pending) >= WRITE_EVERY:
                flush()
    stats.lines = number
    flush()
    fold()
    return out
