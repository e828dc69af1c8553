"""Cluster lookups on loaded snapshots: who held an IP when, what a node address is, and which pods
and ports a Service address reaches. Expected answers are read off the fixtures by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from netpol_gen.model.cluster import (
    Cluster,
    Endpoint,
    EndpointKind,
    Node,
    Pod,
    ServicePort,
    resolve_target_port,
)
from netpol_gen.model.snapshot import load_cluster

DATA = Path(__file__).parent / "data"
SNAPSHOT = DATA / "snapshot-kubectl-list-yaml" / "cluster.yaml"
BEFORE = DATA / "snapshot-ip-reuse" / "1-before.yaml"
AFTER = DATA / "snapshot-ip-reuse" / "2-after.yaml"

REUSED_IP = "10.244.1.23"
OLD_CART = "shop/cart-6f7b8c9d4e-k2m4p"  # created 09:00, deleted at 10:35:30
NEW_CART = "shop/cart-6f7b8c9d4e-z9x8w"  # created 10:40:00


def at(hour: int, minute: int, second: int = 0) -> float:
    """2024-01-15 (the day of every fixture snapshot) at a UTC time, in epoch seconds."""
    return datetime(2024, 1, 15, hour, minute, second, tzinfo=UTC).timestamp()


def key_of(pod: Pod | None) -> str | None:
    return pod.key if pod is not None else None


def pod_named(cluster: Cluster, key: str) -> Pod:
    (pod,) = [p for p in cluster.pods if p.key == key]
    return pod


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_cluster([str(SNAPSHOT)])


@pytest.fixture(scope="module", params=["before-then-after", "after-then-before"])
def reuse(request: pytest.FixtureRequest) -> Cluster:
    """Both IP-reuse snapshots, in either order: who held an IP must not depend on argument order."""
    paths = [str(BEFORE), str(AFTER)]
    return load_cluster(paths if request.param == "before-then-after" else paths[::-1])


def backends(
    cluster: Cluster, ip: str, port: int, protocol: str = "TCP", ts: float | None = None
) -> set[tuple[str, int]]:
    target = cluster.service_target(ip, port, protocol, ts)
    assert target is not None, f"{ip}:{port}/{protocol} is not a Service address"
    return {(b.pod.key, b.port) for b in target.backends}


# --- pod IPs over time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "holder"),
    [
        (at(10, 0), OLD_CART),
        (at(10, 35, 29), OLD_CART),
        (at(10, 40, 0), NEW_CART),
        (at(10, 50), NEW_CART),
        (None, NEW_CART),  # no time: the live pod
    ],
    ids=["old-pod-time", "just-before-deletion", "new-pod-creation", "new-pod-time", "no-time"],
)
def test_reused_ip_is_attributed_to_the_pod_that_held_it_at_the_time(
    reuse: Cluster, ts: float | None, holder: str
) -> None:
    assert key_of(reuse.pod_at(REUSED_IP, ts)) == holder
    endpoint = reuse.endpoint(REUSED_IP, ts)
    assert endpoint.kind is EndpointKind.POD
    assert key_of(endpoint.pod) == holder


@pytest.mark.parametrize(
    "ts", [at(8, 0), at(10, 35, 30), at(10, 38)], ids=["before-old-pod", "at-deletion", "between-pods"]
)
def test_reused_ip_held_by_nobody_at_the_time_is_an_unknown_cluster_ip(reuse: Cluster, ts: float) -> None:
    assert reuse.pod_at(REUSED_IP, ts) is None
    endpoint = reuse.endpoint(REUSED_IP, ts)
    assert endpoint.kind is EndpointKind.UNKNOWN_CLUSTER_IP
    assert endpoint.pod is None


@pytest.mark.parametrize("ip", ["10.244.2.99", "fd00:10:244:1::99"], ids=["ipv4", "ipv6"])
def test_unheld_address_inside_a_node_pod_cidr_is_an_unknown_cluster_ip(cluster: Cluster, ip: str) -> None:
    assert cluster.endpoint(ip).kind is EndpointKind.UNKNOWN_CLUSTER_IP
    assert cluster.endpoint(ip, at(11, 0)).kind is EndpointKind.UNKNOWN_CLUSTER_IP


@pytest.mark.parametrize("ip", ["172.16.5.5", "10.244.3.1", "8.8.8.8", "2001:db8::1"])
def test_address_outside_pod_cidrs_and_nodes_is_external(cluster: Cluster, ip: str) -> None:
    endpoint = cluster.endpoint(ip, at(11, 0))
    assert endpoint.kind is EndpointKind.EXTERNAL
    assert endpoint.pod is None and endpoint.node is None


def test_finished_pod_holds_its_ip_only_until_its_containers_stopped(cluster: Cluster) -> None:
    backup_ip = "10.244.1.40"  # backup-28421980-q7x2m, Succeeded at 11:41:30
    assert key_of(cluster.pod_at(backup_ip, at(11, 41))) == "shop/backup-28421980-q7x2m"
    assert cluster.pod_at(backup_ip, at(11, 45)) is None
    assert cluster.pod_at(backup_ip) is None  # not live
    assert cluster.endpoint(backup_ip).kind is EndpointKind.UNKNOWN_CLUSTER_IP


def test_pod_is_found_by_its_ipv6_address(cluster: Cluster) -> None:
    endpoint = cluster.endpoint("fd00:10:244:1::f")
    assert endpoint.kind is EndpointKind.POD
    assert key_of(endpoint.pod) == "shop/web-7d9f8b6c5d-abcde"


# --- nodes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "node"),
    [("192.168.10.12", "node-b"), ("203.0.113.12", "node-b"), ("fd00:192:168:10::11", "node-a")],
    ids=["internal", "external", "internal-ipv6"],
)
def test_node_address_is_a_node_endpoint(cluster: Cluster, ip: str, node: str) -> None:
    endpoint = cluster.endpoint(ip)
    assert endpoint.kind is EndpointKind.NODE
    assert endpoint.node is not None and endpoint.node.name == node
    assert endpoint.pod is None


def test_host_network_pod_ip_resolves_to_the_node_not_the_pod(cluster: Cluster) -> None:
    # node-exporter-xk2p9 runs with hostNetwork on node-a and reports podIP 192.168.10.11
    assert cluster.pod_at("192.168.10.11") is None
    for ts in (None, at(11, 0)):
        endpoint = cluster.endpoint("192.168.10.11", ts)
        assert endpoint.kind is EndpointKind.NODE
        assert endpoint.node is not None and endpoint.node.name == "node-a"
        assert endpoint.pod is None


# --- dual stack ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"), [("10.244.2.30", "10.244.1.15"), ("fd00:10:244:2::30", "fd00:10:244:1::f")]
)
def test_endpoint_of_a_dual_stack_pod_uses_the_address_of_the_peers_family(
    cluster: Cluster, peer: str, expected: str
) -> None:
    web = pod_named(cluster, "shop/web-7d9f8b6c5d-abcde")
    endpoint = Endpoint.of_pod(web, peer)
    assert endpoint.ip == expected
    assert endpoint.kind is EndpointKind.POD
    assert endpoint.pod is web


# --- Services -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster_ip", ["10.96.10.10", "fd00:10:96::a"], ids=["ipv4", "ipv6"])
def test_cluster_ip_with_endpoint_slices_reaches_only_the_ready_endpoints(cluster: Cluster, cluster_ip: str) -> None:
    # both web pods match the selector, but the EndpointSlice lists web-...-fghij as not ready
    target = cluster.service_target(cluster_ip, 80, "TCP")
    assert target is not None
    assert target.service.key == "shop/web"
    assert target.port.name == "http"
    assert {(b.pod.key, b.port) for b in target.backends} == {("shop/web-7d9f8b6c5d-abcde", 8080)}


def test_second_service_port_reaches_its_own_slice_port(cluster: Cluster) -> None:
    assert backends(cluster, "10.96.10.10", 9090) == {("shop/web-7d9f8b6c5d-abcde", 9090)}


def test_named_target_port_without_slices_is_resolved_on_each_pod(cluster: Cluster) -> None:
    # api has no EndpointSlice in the snapshot: backends come from its selector; mid-rollout the old
    # pod names port "http" 8080 and the new one 8000; the Pending pod has no IP and is no backend
    assert backends(cluster, "10.96.20.20", 80) == {
        ("shop/api-5b6c7d8e9f-aaaaa", 8080),
        ("shop/api-6c7d8e9f0a-bbbbb", 8000),
    }


def test_selector_backends_are_the_pods_alive_at_the_flow_time(cluster: Cluster) -> None:
    # api-6c7d8e9f0a-bbbbb was created at 11:50
    assert backends(cluster, "10.96.20.20", 80, ts=at(11, 0)) == {("shop/api-5b6c7d8e9f-aaaaa", 8080)}


@pytest.mark.parametrize(
    ("port", "protocol"), [(443, "TCP"), (80, "UDP"), (8080, "TCP")], ids=["no-such-port", "other-protocol", "target"]
)
def test_cluster_ip_on_a_port_the_service_does_not_expose_is_no_service_target(
    cluster: Cluster, port: int, protocol: str
) -> None:
    assert cluster.service_target("10.96.10.10", port, protocol) is None


@pytest.mark.parametrize("node_ip", ["192.168.10.11", "192.168.10.12", "203.0.113.12"])
def test_node_port_on_any_node_address_reaches_the_service_backends(cluster: Cluster, node_ip: str) -> None:
    target = cluster.service_target(node_ip, 30080, "TCP")
    assert target is not None and target.service.key == "shop/web" and target.port.port == 80
    assert backends(cluster, node_ip, 30090) == {("shop/web-7d9f8b6c5d-abcde", 9090)}


def test_node_port_on_a_pod_ip_is_no_service_target(cluster: Cluster) -> None:
    assert cluster.service_target("10.244.1.50", 30080, "TCP") is None


def test_service_whose_slice_lists_no_pods_has_a_target_without_backends(cluster: Cluster) -> None:
    # default/kubernetes: its EndpointSlice points at the API server's address, not at a pod
    target = cluster.service_target("10.96.0.1", 443, "TCP")
    assert target is not None and target.service.key == "default/kubernetes"
    assert target.backends == ()


def test_headless_service_has_no_address_to_resolve(cluster: Cluster) -> None:
    assert cluster.service_target("10.244.2.30", 5432, "TCP") is None


@pytest.mark.parametrize(
    ("pod", "sport", "expected"),
    [
        ("shop/api-5b6c7d8e9f-aaaaa", ServicePort(80, target_port="http"), 8080),
        ("shop/api-6c7d8e9f0a-bbbbb", ServicePort(80, target_port="http"), 8000),
        ("shop/api-6c7d8e9f0a-bbbbb", ServicePort(80, protocol="UDP", target_port="http"), None),
        ("shop/api-6c7d8e9f0a-bbbbb", ServicePort(80, protocol="UDP", target_port="http-udp"), 8000),
        ("shop/api-5b6c7d8e9f-aaaaa", ServicePort(80, target_port="metrics"), None),
        ("shop/api-5b6c7d8e9f-aaaaa", ServicePort(80, target_port=8443), 8443),
        ("shop/api-5b6c7d8e9f-aaaaa", ServicePort(80), 80),
    ],
    ids=["named-old", "named-new", "name-of-other-protocol", "named-udp", "unknown-name", "number", "default"],
)
def test_target_port_resolution_per_pod(cluster: Cluster, pod: str, sport: ServicePort, expected: int | None) -> None:
    assert resolve_target_port(pod_named(cluster, pod), sport) == expected


def test_namespace_labels_fall_back_to_the_metadata_name_label(cluster: Cluster) -> None:
    assert dict(cluster.namespace_labels("shop"))["team"] == "payments"
    assert dict(cluster.namespace_labels("default")) == {"kubernetes.io/metadata.name": "default"}


def test_in_pod_network_over_node_cidrs_of_several_prefix_lengths_and_families() -> None:
    cluster = Cluster.build(nodes=[Node("a", ("192.168.0.1",), ("10.244.1.0/24", "fd00:10::/64")),
                                   Node("b", ("192.168.0.2",), ("10.250.0.0/16", "10.244.2.7/24"))])
    inside = ("10.244.1.9", "10.244.2.255", "10.250.7.1", "fd00:10::5")
    outside = ("10.244.3.1", "10.251.0.1", "192.168.0.1", "fd00:11::5", "::ffff:10.244.1.9")
    assert [cluster.in_pod_network(ip) for ip in inside] == [True] * len(inside)
    assert [cluster.in_pod_network(ip) for ip in outside] == [False] * len(outside)
