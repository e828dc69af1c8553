"""Properties: for any learned graph and options, the generated policies allow every edge they must allow
(judged by the evaluator for every pod pair), parse, and validate against the API schema; and
verification by equivalence classes finds exactly the denials that judging every pod pair finds, for
policy sets broken on purpose.

Labels come from a tiny vocabulary so that workloads often share labels: ambiguous selectors, empty
selectors and controller selectors that select too much are all exercised."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import ContainerPort
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.synthesizer import (
    LearnedEdge,
    LearnedInputs,
    LearnedWorkload,
    Options,
    PodView,
    select_edges,
    synthesize,
    verify,
)
from netpol_gen.synthesizer.verify import LearnedCluster

NAMESPACES = ("alpha", "beta", "kube-system")
NODES = {"n1": ("10.0.0.1",), "n2": ("10.0.0.2",)}
KINDS = ("Deployment", "StatefulSet", "CronJob", "Pod")
PORTS = (53, 80, 81, 82, 443, 8080)

labels = st.dictionaries(st.sampled_from(("app", "tier", "app.kubernetes.io/name", "pod-template-hash", "job-name")),
                         st.sampled_from(("x", "y")), max_size=3)
container_ports = st.lists(
    st.builds(ContainerPort, st.sampled_from(PORTS), st.sampled_from(("TCP", "UDP")),
              st.sampled_from((None, "http", "dns", "web"))),
    max_size=3, unique_by=lambda c: (c.port, c.protocol)).map(tuple)


@st.composite
def learned_graphs(draw: st.DrawFn) -> LearnedInputs:
    workloads = []
    ip = 0
    for index in range(draw(st.integers(1, 6))):
        pods = []
        template = (draw(labels), draw(container_ports))  # most pods are alike, as from one pod template
        for replica in range(draw(st.integers(1, 3))):
            ip += 1
            pod_labels, pod_ports = draw(st.sampled_from((template, template)) | st.tuples(labels, container_ports))
            pods.append(PodView(f"w{index}-{replica}", pod_labels, pod_ports, (f"10.244.0.{ip}",),
                                draw(st.sampled_from(sorted(NODES)))))
        selector = draw(st.none() | labels)
        if selector is not None:  # a controller's selector selects its own pods
            pods = [PodView(p.name, {**p.labels, **selector}, p.container_ports, p.ips, p.node) for p in pods]
        workloads.append(LearnedWorkload(draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(KINDS)),
                                         f"w{index}", tuple(pods), selector))
    ends = [Identity(IdentityKind.POD, w.namespace, w.kind, w.name) for w in workloads] + [
        Identity.of_node("n1"), Identity.of_node("n2"),
        Identity.of_address(IdentityKind.EXTERNAL, "203.0.113.7"),
        Identity.of_address(IdentityKind.EXTERNAL, "203.0.113.9"),
        Identity.of_address(IdentityKind.UNKNOWN, "10.244.200.1"),
    ]
    edges = draw(st.lists(
        st.builds(LearnedEdge, st.sampled_from(ends), st.sampled_from(ends), st.sampled_from(PORTS),
                  st.sampled_from(("TCP", "UDP")), st.integers(1, 5),
                  pod_nodes=st.frozensets(st.sampled_from(("n1", "n2", None)), max_size=2)),
        max_size=25))
    return LearnedInputs(tuple(workloads), tuple(edges), nodes=NODES,
                         dns_names={"203.0.113.7": ("api.example.com",)})


options = st.builds(
    Options,
    exclude_namespaces=st.sampled_from((frozenset({"kube-system"}), frozenset())),
    min_connections=st.integers(1, 2),
    ingress_only=st.booleans(),
    default_deny=st.booleans(),
    isolate_idle=st.booleans(),
    include_unknown=st.booleans(),
    named_ports=st.booleans(),
    port_range_min=st.sampled_from((None, 2, 3)),
    cidr_aggregate=st.sampled_from((None, 24)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(learned_graphs(), options)
def test_every_observed_edge_is_allowed(inputs: LearnedInputs, opts: Options) -> None:
    result = synthesize(inputs, opts)
    assert result.ok, [d.describe() for d in result.report.verification.denied]
    for policy in result.policies:
        kubernetes_validate.validate(policy, "1.31.0", strict=True)


# --- verification by equivalence classes misses no denial -------------------------------------------


def every_pair(policies: list[dict[str, Any]], inputs: LearnedInputs, opts: Options) -> tuple[int, Counter[str]]:
    """The reference: every address pair of every edge judged, pods of other nodes left out of an
    edge seen only between pods and their own node. Returns pairs judged and denied pairs per edge."""
    learned = LearnedCluster(inputs)
    evaluator = Evaluator(learned.cluster, [parse_policy(p) for p in policies])
    selection = select_edges(inputs, opts)
    judged, denied = 0, Counter[str]()
    for edge in (*selection.kept, *selection.own_node):
        node = edge.node_end if edge.own_node_only else None
        for version, src in learned.endpoints(edge.src):
            for dst_version, dst in learned.endpoints(edge.dst):
                if version != dst_version or (src.pod is not None and src.pod is dst.pod):
                    continue
                if node is not None and any(e.pod is not None and e.pod.node_name != node for e in (src, dst)):
                    continue
                judged += 1
                if not evaluator.judge(src, dst, edge.port, edge.protocol).allowed:
                    denied[edge.describe()] += 1
    return judged, denied


def _ip_block_rule(direction: str, exclude: str) -> dict[str, Any]:
    """Admits the pod network but one pod's address: pods of one workload get different verdicts."""
    block = {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{exclude}/32"]}}
    return {"from" if direction == "ingress" else "to": [block]}


@st.composite
def broken(draw: st.DrawFn, policies: list[dict[str, Any]], inputs: LearnedInputs) -> list[dict[str, Any]]:
    """The policies with a rule dropped here and there (e.g. the node ipBlock that only pods on other
    nodes need) and some directions' rules replaced by an ipBlock of the pod network but one pod."""
    replicated = [w for w in inputs.workloads if len(w.pods) > 1] or inputs.workloads  # where classes merge pods
    pod_ips = sorted(ip for w in replicated for pod in w.pods for ip in pod.ips)
    policies = copy.deepcopy(policies)
    for policy in policies:
        for direction in ("ingress", "egress"):
            rules = policy["spec"].get(direction)
            if not rules:
                continue
            action = draw(st.sampled_from(("keep", "drop-one", "ip-block", "ip-block")))
            if action == "drop-one":
                del rules[draw(st.integers(0, len(rules) - 1))]
            elif action == "ip-block":
                rules[:] = [_ip_block_rule(direction, draw(st.sampled_from(pod_ips)))]
    return policies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(learned_graphs(), options, st.data())
def test_class_verification_finds_exactly_the_denials_of_every_pair(inputs: LearnedInputs, opts: Options,
                                                                    data: st.DataObject) -> None:
    policies = data.draw(broken(synthesize(inputs, opts).policies, inputs))
    verification = verify(policies, inputs, opts)
    judged, denied = every_pair(policies, inputs, opts)
    assert verification.judged == judged
    found = Counter[str]()
    for d in verification.denied:
        found[d.edge.describe()] += d.pairs
    assert found == denied
    assert verification.evaluated <= judged
