"""The evaluator against the upstream Kubernetes e2e NetworkPolicy truth tables.

Each file in ``tests/conformance/`` is one scenario (format in its README): policies as real YAML and
the expected reachability of the x/y/z x a/b/c model, written from the upstream tables and the API
reference. Every cell goes through ``Evaluator.judge_flow`` with real pod IPs, so address resolution
is part of what is checked. A mismatch fails with the grid the evaluator produced, differing cells
marked, and the evaluator's reason for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from netpol_gen.evaluator import Evaluator, parse_any, parse_policy
from netpol_gen.model import Cluster, ContainerPort, Flow, Namespace, Node, Pod, Service, ServicePort, Workload
from netpol_gen.model.cluster import METADATA_NAME_LABEL, EndpointSlice, SliceEndpoint
from netpol_gen.model.dns import DnsAnswerSeen

SCENARIO_DIR = Path(__file__).parent / "conformance"
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.yaml"))
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
POD_KEYS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)
SERVED = tuple((port, protocol) for port in (80, 81) for protocol in ("TCP", "UDP", "SCTP"))
SCENARIO_KEYS = {"description", "upstream", "cluster", "services", "dns", "policies", "matrices", "probes", "flows"}
ALLOWED, BLOCKED = ".", "X"


def pod_ip(key: str, family: str) -> str:
    """The address of pod ``ns/name`` in the model: x, y, z and a, b, c numbered from 1."""
    ns, name = key.split("/")
    n, p = NAMESPACES.index(ns) + 1, POD_NAMES.index(name) + 1
    return f"10.244.{n}.{p}" if family == "IPv4" else f"fd00:10:244:{n}::{p}"


def parse_port(text: str) -> tuple[int, str]:
    """``"80/TCP"`` -> ``(80, "TCP")``."""
    port, protocol = text.split("/")
    return int(port), protocol


def parse_container_port(text: str) -> ContainerPort:
    """``"web:8080/TCP"`` -> a named container port."""
    name, port = text.split(":")
    number, protocol = parse_port(port)
    return ContainerPort(number, protocol, name)


def build_cluster(overrides: Mapping[str, Any], services: list[Mapping[str, Any]]) -> Cluster:
    """The upstream model cluster with the scenario's label and port overrides and Services."""
    namespace_labels = overrides.get("namespaceLabels", {})
    pod_labels = overrides.get("podLabels", {})
    pod_ports = overrides.get("podPorts", {})
    namespaces = [
        Namespace(ns, {"ns": ns, METADATA_NAME_LABEL: ns, **namespace_labels.get(ns, {})}) for ns in NAMESPACES
    ]
    pods = []
    for key in POD_KEYS:
        ns, name = key.split("/")
        served = tuple(ContainerPort(port, proto, f"serve-{port}-{proto.lower()}") for port, proto in SERVED)
        extra = tuple(parse_container_port(text) for text in pod_ports.get(key, []))
        pods.append(
            Pod(
                namespace=ns,
                name=name,
                uid=key,
                labels={"pod": name, **pod_labels.get(key, {})},
                ips=(pod_ip(key, "IPv4"), pod_ip(key, "IPv6")),
                workload=Workload("Pod", name),
                node_name="node-1",
                container_ports=served + extra,
            )
        )
    nodes = [
        Node("node-1", ("192.168.0.10",), ("10.244.0.0/16", "fd00:10:244::/48")),
        Node("node-2", ("192.168.0.20",)),
    ]
    svcs = [
        Service(
            namespace=svc["namespace"],
            name=svc["name"],
            selector=svc["selector"],
            ports=tuple(
                ServicePort(p["port"], p.get("protocol", "TCP"), target_port=p.get("targetPort")) for p in svc["ports"]
            ),
            cluster_ips=(svc["clusterIP"],),
        )
        for svc in services
    ]
    return Cluster.build(namespaces=namespaces, pods=pods, services=svcs, nodes=nodes)


def parse_grid(text: str) -> dict[tuple[str, str], bool]:
    """A truth table (rows: from, columns: to) as ``{(src, dst): allowed}``; it must be complete."""
    header, *rows = (line.split() for line in text.strip().splitlines())
    assert header == ["-", *POD_KEYS], f"grid header must be '- {' '.join(POD_KEYS)}', got {header}"
    assert [row[0] for row in rows] == list(POD_KEYS), "grid rows must be the pods in header order"
    cells: dict[tuple[str, str], bool] = {}
    for src, *marks in rows:
        assert len(marks) == len(POD_KEYS) and set(marks) <= {ALLOWED, BLOCKED}, f"bad grid row {src}"
        for dst, mark in zip(POD_KEYS, marks, strict=True):
            cells[(src, dst)] = mark == ALLOWED
    return cells


@dataclass
class Scenario:
    """A loaded scenario file with its evaluator over the model cluster."""

    name: str
    doc: dict[str, Any]
    evaluator: Evaluator

    @classmethod
    def load(cls, path: Path) -> Scenario:
        doc = yaml.safe_load(path.read_text())
        unknown = set(doc) - SCENARIO_KEYS
        assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
        assert doc.get("description") and doc.get("policies") and doc.get("matrices"), f"{path.name}: incomplete"
        cluster = build_cluster(doc.get("cluster", {}), doc.get("services", []))
        # DNS answers (Cilium toFQDNs); probes carry no time, so an answer names its address throughout
        cluster.set_dns(DnsAnswerSeen(d["name"], d["address"], 300, 0.0, 0.0) for d in doc.get("dns", []))
        policies = [parse_any(p, where=path.name) for p in doc["policies"]]
        return cls(path.stem, doc, Evaluator(cluster, policies))

    def address(self, end: str, family: str) -> str:
        """A pod key as its address of ``family``; anything else is already an IP."""
        return pod_ip(end, family) if end in POD_KEYS else end

    def endpoints(self, src: str, dst: str) -> tuple[str, str]:
        """Addresses for a probe: a pod end takes the address family of the other end."""
        literal = next((end for end in (src, dst) if end not in POD_KEYS), None)
        family = "IPv6" if literal is not None and ":" in literal else "IPv4"
        return self.address(src, family), self.address(dst, family)

    def judge(self, src_ip: str, dst_ip: str, port_text: str):  # -> FlowVerdict
        port, protocol = parse_port(port_text)
        return self.evaluator.judge_flow(Flow(src_ip, dst_ip, port, protocol))


def render(cells: Mapping[tuple[str, str], bool], differs: set[tuple[str, str]]) -> str:
    """A grid in the scenario format, a ``!`` after each cell that differs from the expectation."""
    lines = ["-   " + " ".join(f"{key:>4}" for key in POD_KEYS)]
    for src in POD_KEYS:
        marks = []
        for dst in POD_KEYS:
            mark = ALLOWED if cells[(src, dst)] else BLOCKED
            marks.append(f"{mark + ('!' if (src, dst) in differs else ' '):>4}")
        lines.append(f"{src} " + " ".join(marks))
    return "\n".join(lines)


def matrix_mismatches(scenario: Scenario, matrix: Mapping[str, Any]) -> list[str]:
    expected = parse_grid(matrix["grid"])
    family = matrix.get("family", "IPv4")
    problems = []
    for port_text in matrix["ports"]:
        actual, reasons = {}, {}
        for src, dst in expected:
            verdict = scenario.judge(pod_ip(src, family), pod_ip(dst, family), port_text)
            actual[(src, dst)] = verdict.allowed
            reasons[(src, dst)] = "; ".join(v.reason() for v in verdict.verdicts)
        differs = {cell for cell in expected if expected[cell] != actual[cell]}
        if differs:
            details = "\n".join(
                f"  {src} -> {dst}: expected {'allowed' if expected[(src, dst)] else 'blocked'}, "
                f"evaluator says {reasons[(src, dst)]}"
                for src, dst in sorted(differs)
            )
            problems.append(
                f"{port_text} {family}: {len(differs)} cell(s) differ; evaluator's grid ('!' = differs):\n"
                f"{render(actual, differs)}\n{details}"
            )
    return problems


def probe_mismatches(scenario: Scenario) -> list[str]:
    problems = []
    for probe in scenario.doc.get("probes", []):
        src, dst = scenario.endpoints(probe["from"], probe["to"])
        verdict = scenario.judge(src, dst, probe["port"])
        if verdict.allowed != probe["allowed"]:
            problems.append(
                f"probe {probe['from']} ({src}) -> {probe['to']} ({dst}) {probe['port']}: expected "
                f"{'allowed' if probe['allowed'] else 'blocked'}, evaluator says "
                + "; ".join(v.reason() for v in verdict.verdicts)
            )
    return problems


def flow_mismatches(scenario: Scenario) -> list[str]:
    """Service flows: judged once per backend, at the backend's targetPort."""
    problems = []
    for flow in scenario.doc.get("flows", []):
        src, dst = scenario.endpoints(flow["from"], flow["to"])
        verdict = scenario.judge(src, dst, flow["port"])
        actual = {v.dst.pod.key: v.allowed for v in verdict.verdicts if v.dst.pod is not None}
        label = f"flow {flow['from']} -> {flow['to']} {flow['port']}"
        if verdict.service is None or actual != flow["backends"]:
            problems.append(
                f"{label}: expected backends {flow['backends']}, evaluator judged {actual} "
                f"(service {'resolved' if verdict.service else 'not resolved'})"
            )
        elif verdict.allowed != all(flow["backends"].values()):
            problems.append(f"{label}: a flow is allowed only if every backend admits it")
    return problems


def test_suite_has_at_least_fifty_scenarios() -> None:
    assert len(SCENARIO_FILES) >= 50


def check_scenario(path: Path) -> None:
    """Fail with every cell, probe and flow of the scenario the evaluator judges otherwise."""
    scenario = Scenario.load(path)
    problems = [
        *(p for matrix in scenario.doc["matrices"] for p in matrix_mismatches(scenario, matrix)),
        *probe_mismatches(scenario),
        *flow_mismatches(scenario),
    ]
    if problems:
        pytest.fail(f"{path.name}: {scenario.doc['description']}\n" + "\n\n".join(problems), pytrace=False)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda path: path.stem)
def test_evaluator_agrees_with_upstream_truth_table(path: Path) -> None:
    check_scenario(path)


def test_host_network_service_backend_is_not_subject_to_policies() -> None:
    """Policies never apply to hostNetwork pods (API reference); reaching one through its Service's
    EndpointSlice must be judged like reaching its node address directly, not by its namespace's policies."""
    exporter = Pod(
        "mon",
        "exporter-1",
        "u1",
        {"app": "exporter"},
        ("192.168.0.20",),
        Workload("DaemonSet", "exporter"),
        host_network=True,
        node_name="node-2",
    )
    client = Pod("mon", "prom-0", "u2", {"app": "prom"}, ("10.244.1.5",), Workload("StatefulSet", "prom"))
    cluster = Cluster.build(
        pods=[exporter, client],
        services=[
            Service(
                "mon",
                "exporter",
                {"app": "exporter"},
                (ServicePort(9100, "TCP", "metrics"),),
                cluster_ips=("10.96.0.50",),
            )
        ],
        endpoint_slices=[
            EndpointSlice(
                "mon",
                "exporter",
                (SliceEndpoint("mon", "exporter-1", ("192.168.0.20",)),),
                (ContainerPort(9100, "TCP", "metrics"),),
            )
        ],
        nodes=[Node("node-2", ("192.168.0.20",))],
    )
    deny_all = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "mon"},
        "spec": {"podSelector": {}},
    }
    evaluator = Evaluator(cluster, [parse_policy(deny_all)])
    via_service = evaluator.judge_flow(Flow("10.244.1.5", "10.96.0.50", 9100, "TCP"))
    direct = evaluator.judge_flow(Flow("10.244.1.5", "192.168.0.20", 9100, "TCP"))
    assert via_service.service is not None and len(via_service.verdicts) == 1
    assert via_service.allowed and direct.allowed
