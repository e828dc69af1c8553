"""Property: for any learned graph and options, the generated policies allow every edge they must allow
(judged by the evaluator for every pod pair), parse, and validate against the API schema.

Labels come from a tiny vocabulary so that workloads often share labels: ambiguous selectors, empty
selectors and controller selectors that select too much are all exercised."""

from __future__ import annotations

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.evaluator import ContainerPort
from netpol_gen.store.identity import Identity, IdentityKind
from netpol_gen.synthesizer import LearnedEdge, LearnedInputs, LearnedWorkload, Options, PodView, synthesize

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
        for replica in range(draw(st.integers(1, 3))):
            ip += 1
            pods.append(PodView(f"w{index}-{replica}", draw(labels), draw(container_ports), (f"10.244.0.{ip}",),
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
                  st.sampled_from(("TCP", "UDP")), st.integers(1, 5)),
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
