"""The indexed, cached ``Evaluator`` agrees with the naive reference evaluator on random clusters and
random valid policies, for every (source, destination, port, protocol).

The conformance tables pin down the semantics case by case; this covers the combinations nobody
thought to write down: selectors of every operator on pods and namespaces, ipBlocks with excepts in
both families, numbered, ranged and named ports, defaulted and explicit policyTypes, external
addresses and nodes on either end.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import Cluster, ContainerPort, Namespace, Node, Pod, Workload
from netpol_gen.model.cluster import METADATA_NAME_LABEL
from tests.naive_evaluator import NaiveCluster, NaivePod, allowed

NAMESPACES = ("ns-a", "ns-b", "ns-c")
LABEL_KEYS = ("app", "tier", "env")
LABEL_VALUES = ("web", "db", "prod", "")
NAMESPACE_LABEL_KEYS = ("team", "env")
PORT_NAMES = ("http", "dns", "metrics")
PORTS = (53, 80, 81, 9090)
PROTOCOLS = ("TCP", "UDP", "SCTP")
NODES = {"node-1": "172.16.0.1", "node-2": "172.16.0.2"}
EXTERNAL_IPS = ("10.1.0.5", "192.0.2.10", "203.0.113.7")
# cidr -> the excepts that may go with it (strictly inside it)
CIDRS = {
    "10.0.0.0/16": ("10.0.1.0/24", "10.0.2.0/25"),
    "10.0.1.0/24": ("10.0.1.2/31", "10.0.1.4/32"),
    "10.0.0.0/8": ("10.1.0.0/16", "10.0.0.0/16"),
    "0.0.0.0/0": ("10.0.0.0/8", "172.16.0.1/32"),
    "192.0.2.0/24": ("192.0.2.8/29",),
    "172.16.0.0/24": ("172.16.0.2/32",),
    "fd00::/8": ("fd00::/16",),
}

labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3)


@st.composite
def selectors(draw: st.DrawFn, keys: tuple[str, ...] = LABEL_KEYS) -> dict[str, Any]:
    """A LabelSelector: matchLabels and/or matchExpressions of every operator, often empty."""
    selector: dict[str, Any] = {}
    match_labels = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(LABEL_VALUES), max_size=2))
    if match_labels:
        selector["matchLabels"] = match_labels
    expressions = []
    for _ in range(draw(st.integers(0, 2))):
        key, operator = draw(st.sampled_from(keys)), draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expression: dict[str, Any] = {"key": key, "operator": operator}
        if operator in ("In", "NotIn"):
            expression["values"] = draw(st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2, unique=True))
        expressions.append(expression)
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("pod", "namespace", "both", "ipBlock", "ipBlock")))
    if kind == "ipBlock":
        cidr = draw(st.sampled_from(sorted(CIDRS)))
        block: dict[str, Any] = {"cidr": cidr}
        excepts = draw(st.lists(st.sampled_from(CIDRS[cidr]), max_size=2, unique=True))
        if excepts:
            block["except"] = excepts
        return {"ipBlock": block}
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = draw(selectors())
    if kind in ("namespace", "both"):
        peer["namespaceSelector"] = draw(selectors((*NAMESPACE_LABEL_KEYS, METADATA_NAME_LABEL)))
    return peer


@st.composite
def port_entries(draw: st.DrawFn) -> dict[str, Any]:
    """{} (all TCP), a protocol alone, a number, a range, or a container port name."""
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["protocol"] = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("any", "number", "range", "name")))
    if kind == "number":
        entry["port"] = draw(st.sampled_from(PORTS))
    elif kind == "range":
        start = draw(st.sampled_from(PORTS))
        entry["port"], entry["endPort"] = start, draw(st.sampled_from([p for p in (*PORTS, 65535) if p >= start]))
    elif kind == "name":
        entry["port"] = draw(st.sampled_from((*PORT_NAMES, "unknown")))
    return entry


@st.composite
def rules(draw: st.DrawFn, peer_key: str) -> dict[str, Any]:
    """Peers and ports each absent (all), or one to three entries; mostly present, so rules bite."""
    rule: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        rule[peer_key] = draw(st.lists(peers(), min_size=1, max_size=3))
    if draw(st.integers(0, 2)):
        rule["ports"] = draw(st.lists(port_entries(), min_size=1, max_size=2))
    return rule


@st.composite
def policies(draw: st.DrawFn, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors())}
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    for key, peer_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[key] = draw(st.lists(rules(peer_key), min_size=1, max_size=2))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"np-{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
        "spec": spec,
    }


@st.composite
def clusters(draw: st.DrawFn) -> NaiveCluster:
    namespace_labels = {
        ns: {
            **draw(st.dictionaries(st.sampled_from(NAMESPACE_LABEL_KEYS), st.sampled_from(LABEL_VALUES))),
            METADATA_NAME_LABEL: ns,
        }
        for ns in NAMESPACES
    }
    pods = []
    for i in range(draw(st.integers(1, 6))):
        named = draw(
            st.dictionaries(st.sampled_from(PORT_NAMES), st.tuples(st.sampled_from(PORTS), st.sampled_from(PROTOCOLS)))
        )
        pods.append(
            NaivePod(
                namespace=draw(st.sampled_from(NAMESPACES)),
                name=f"pod-{i}",
                labels=draw(labels),
                ip=f"10.0.{draw(st.sampled_from((1, 2)))}.{i + 1}",
                node=draw(st.sampled_from(sorted(NODES))),
                ports=named,
            )
        )
    return NaiveCluster(namespace_labels, tuple(pods), NODES)


def indexed_evaluator(cluster: NaiveCluster, raw_policies: list[dict[str, Any]]) -> Evaluator:
    """The same cluster and policies, as netpol_gen models them."""
    model = Cluster.build(
        namespaces=[Namespace(ns, dict(lbls)) for ns, lbls in cluster.namespace_labels.items()],
        pods=[
            Pod(
                namespace=pod.namespace,
                name=pod.name,
                uid=pod.name,
                labels=dict(pod.labels),
                ips=(pod.ip,),
                workload=Workload("Pod", pod.name),
                node_name=pod.node,
                container_ports=tuple(ContainerPort(port, proto, name) for name, (port, proto) in pod.ports.items()),
            )
            for pod in cluster.pods
        ],
        nodes=[Node(name, (ip,), ("10.0.0.0/16",)) for name, ip in cluster.node_ips.items()],
    )
    return Evaluator(model, [parse_policy(p) for p in raw_policies])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[NaiveCluster, list[dict[str, Any]]]:
    cluster = draw(clusters())
    return cluster, [draw(policies(i)) for i in range(draw(st.integers(1, 4)))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_indexed_evaluator_agrees_with_naive_reference(scenario: tuple[NaiveCluster, list[dict[str, Any]]]) -> None:
    cluster, raw_policies = scenario
    evaluator = indexed_evaluator(cluster, raw_policies)
    addresses = [*(pod.ip for pod in cluster.pods if cluster.pod_at(pod.ip) is pod), *NODES.values(), *EXTERNAL_IPS]
    disagreements = []
    for src in addresses:
        for dst in addresses:
            if src == dst and cluster.pod_at(src) is None:
                continue
            for port in PORTS:
                for protocol in PROTOCOLS:
                    expected = allowed(cluster, raw_policies, src, dst, port, protocol)
                    verdict = evaluator.judge(
                        evaluator.cluster.endpoint(src), evaluator.cluster.endpoint(dst), port, protocol
                    )
                    if verdict.allowed != expected:
                        disagreements.append(
                            f"{src} -> {dst} {port}/{protocol}: naive {expected}, "
                            f"evaluator {verdict.allowed} ({verdict.reason()})"
                        )
    assert not disagreements, "\n".join(disagreements[:10])
