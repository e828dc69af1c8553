"""``check``'s fast path agrees flow by flow with the plain one: :func:`replay_stream` (flows grouped
by connection and by the stretches in which each address stands for the same thing, each group judged
once, JSONL written from per-outcome encoded fragments) writes, for every flow, exactly the record that
``flow_verdict_to_dict(Evaluator.judge_flow(flow))`` gives on a fresh evaluator, and the same summary.

It stands in for a real capture over a cluster whose pods come and go: an IP held by one pod, then
free, then by another pod of another workload; a pod that starts mid-capture; a Service whose
backends (selected by label, named targetPort) change with them; node and external addresses; IPv6
written in non-canonical forms; random policies (the property test's generator: every selector
operator, ipBlocks with ``except``, named and ranged ports) and flows at random times, some of them at
the very instants an address changes hands.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.evaluator.replay import ReplaySummary, flow_verdict_to_dict
from netpol_gen.evaluator.stream import replay_stream
from netpol_gen.model import Cluster, ContainerPort, Namespace, Node, Pod, Workload
from netpol_gen.model.bounds import horizon
from netpol_gen.model.cluster import METADATA_NAME_LABEL, Service, ServicePort
from netpol_gen.model.flows import decode_record, flow_from_record
from tests.test_evaluator_properties import LABEL_VALUES, NAMESPACE_LABEL_KEYS, NAMESPACES, PORTS, labels, policies

SERVICE_IP = "10.96.0.10"
NODES = {"node-1": "172.16.0.1", "node-2": "172.16.0.2"}
# the pods' addresses: .1 changes hands at 200 (and is free from 300), .2 is held from 150 on; v6 pods
POD_IPS = ("10.0.1.1", "10.0.1.2", "10.0.2.3", "10.0.2.4")
V6_IPS = ("fd00::5", "fd00::6")
ADDRESSES = (*POD_IPS, SERVICE_IP, *NODES.values(), "10.1.0.5", "192.0.2.10", "203.0.113.7", "10.0.1.9")
V6_ADDRESSES = (*V6_IPS, "fd00:0::5", "FD00::6", "2001:db8::1", "fd00:1::7")  # some spelled non-canonically
T0 = 1_700_000_000.0  # the pods' lifetimes and the flows' times are offsets from here
TIMES = (None, *(T0 + t for t in (50.0, 100.0, 150.0, 175.5, 200.0, 200.25, 250.0, 300.0, 420.0)))


@st.composite
def pods(draw: st.DrawFn) -> list[Pod]:
    """Six pods on four v4 and two v6 addresses; who holds 10.0.1.1 and 10.0.1.2 depends on the time."""
    lifetimes = [(0.0, 200.0), (200.0, 300.0), (150.0, None), (0.0, None), (0.0, None), (100.0, None)]
    ips = [POD_IPS[0], POD_IPS[0], POD_IPS[1], POD_IPS[2], V6_IPS[0], V6_IPS[1]]
    found = []
    for index, ((created, ended), ip) in enumerate(zip(lifetimes, ips, strict=True)):
        ports = draw(st.dictionaries(st.sampled_from(("http", "metrics")), st.sampled_from(PORTS), max_size=2))
        found.append(Pod(
            namespace=draw(st.sampled_from(NAMESPACES)), name=f"pod-{index}", uid=f"uid-{index}",
            labels=draw(labels), ips=(ip, POD_IPS[3]) if index == 3 else (ip,),  # pod-3 is dual-stack-ish
            workload=Workload("Deployment", f"app-{index % 3}"), node_name=draw(st.sampled_from(sorted(NODES))),
            container_ports=tuple(ContainerPort(port, "TCP", name) for name, port in ports.items()),
            created=T0 + created, ended=None if ended is None else T0 + ended, phase="Running"))
    return found


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    found = draw(pods())
    service = Service(
        namespace=draw(st.sampled_from(NAMESPACES)), name="svc",
        selector=draw(st.dictionaries(st.sampled_from(("app", "tier")), st.sampled_from(LABEL_VALUES),
                                      min_size=1, max_size=1)),
        ports=(ServicePort(80, "TCP", "web", target_port=draw(st.sampled_from(("http", 80, None)))),),
        cluster_ips=(SERVICE_IP,))
    return Cluster.build(
        namespaces=[Namespace(ns, {**draw(st.dictionaries(st.sampled_from(NAMESPACE_LABEL_KEYS),
                                                          st.sampled_from(LABEL_VALUES))), METADATA_NAME_LABEL: ns})
                    for ns in NAMESPACES],
        pods=found, services=[service],
        nodes=[Node(name, (ip,), ("10.0.0.0/16",)) for name, ip in NODES.items()])


@st.composite
def flow_lines(draw: st.DrawFn) -> list[bytes]:
    """JSONL lines; connections repeat (few addresses), each at several times."""
    lines = []
    for _ in range(draw(st.integers(1, 60))):
        pool = draw(st.sampled_from((ADDRESSES, V6_ADDRESSES)))
        record: dict[str, Any] = {
            "src_ip": draw(st.sampled_from(pool)), "dst_ip": draw(st.sampled_from(pool)),
            "dst_port": draw(st.sampled_from((*PORTS, 80))), "protocol": draw(st.sampled_from(("TCP", "udp"))),
            "src_port": draw(st.sampled_from((None, 40000, 40001))),
        }
        ts = draw(st.sampled_from(TIMES))
        if ts is not None:
            record["ts"] = ts
        lines.append(json.dumps(record).encode() + b"\n")
    return lines


def judged_one_by_one(evaluator: Evaluator, lines: list[bytes], explain: bool) -> tuple[list[Any], ReplaySummary]:
    """The plain path: each line decoded, turned into a Flow and judged by itself."""
    latest, records, summary = horizon(), [], ReplaySummary()
    for line in lines:
        result = evaluator.judge_flow(flow_from_record(decode_record(line), latest))
        summary.add(result)
        records.append(json.loads(json.dumps(flow_verdict_to_dict(result, explain=explain))))
    return records, summary


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(st.integers(0, 3), min_size=1, max_size=4).flatmap(
    lambda sizes: st.tuples(*(policies(index) for index in range(len(sizes))))), flow_lines(), st.booleans())
def test_replay_stream_agrees_flow_by_flow_with_judge_flow(
    cluster: Cluster, raw_policies: tuple[dict[str, Any], ...], lines: list[bytes], explain: bool,
) -> None:
    parsed = [parse_policy(raw) for raw in raw_policies]
    written: list[bytes] = []
    streamed = replay_stream(Evaluator(cluster, parsed), io.BytesIO(b"".join(lines)), "flows.jsonl",
                             write=written.append, explain=explain)
    fast = [json.loads(line) for line in b"".join(written).decode().splitlines()]
    plain, summary = judged_one_by_one(Evaluator(cluster, parsed), lines, explain)
    assert len(fast) == len(plain) == len(lines)
    for number, (got, expected) in enumerate(zip(fast, plain, strict=True), 1):
        assert got == expected, f"line {number}: {lines[number - 1]!r}"
    assert streamed.summary.to_dict() == summary.to_dict()
    assert sum(flows for _, flows in streamed.connections) == len(lines)
