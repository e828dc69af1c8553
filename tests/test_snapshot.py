"""The cluster snapshot loader: what it keeps from ``kubectl get ... -o yaml|json`` and how it rejects
bad input. Expected values are read off the fixtures under tests/data/snapshot-*/ by hand."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.errors import SnapshotError
from netpol_gen.model.cluster import (
    Cluster,
    ContainerPort,
    EndpointSlice,
    Pod,
    ServicePort,
    SliceEndpoint,
    Workload,
)
from netpol_gen.model.snapshot import load_cluster

DATA = Path(__file__).parent / "data"
LIST_YAML = DATA / "snapshot-kubectl-list-yaml" / "cluster.yaml"
LIST_JSON = DATA / "snapshot-kubectl-list-json" / "cluster.json"
MULTI_DOC = DATA / "snapshot-multi-document" / "cluster.yaml"
DIRECTORY = DATA / "snapshot-directory"
OWNERS = DATA / "snapshot-owner-objects"
IP_REUSE = DATA / "snapshot-ip-reuse"
BAD = DATA / "snapshot-bad-input"


def utc(*fields: int) -> float:
    """Epoch seconds of a UTC wall-clock time, as the fixtures write their timestamps."""
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def load(*paths: Path, require_pods: bool = False) -> Cluster:
    return load_cluster([str(p) for p in paths], require_pods=require_pods)


def pods_by_key(cluster: Cluster) -> dict[str, Pod]:
    """Every loaded pod by ns/name, live or not (the fixtures have one pod per name)."""
    found: dict[str, Pod] = {}
    for pod in cluster.pods:
        assert pod.key not in found, f"{pod.key} loaded twice"
        found[pod.key] = pod
    return found


def slice_for(cluster: Cluster, namespace: str, service: str) -> EndpointSlice:
    (eps,) = [s for s in cluster.endpoint_slices if (s.namespace, s.service_name) == (namespace, service)]
    return eps


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load(LIST_YAML)


@pytest.fixture(scope="module")
def pods(cluster: Cluster) -> dict[str, Pod]:
    return pods_by_key(cluster)


# --- what is kept ------------------------------------------------------------------------------


def test_every_object_of_the_list_is_loaded(cluster: Cluster) -> None:
    assert set(cluster.namespaces) == {"shop", "monitoring"}
    assert set(pods_by_key(cluster)) == {
        "shop/web-7d9f8b6c5d-abcde",
        "shop/web-7d9f8b6c5d-fghij",
        "shop/api-5b6c7d8e9f-aaaaa",
        "shop/api-6c7d8e9f0a-bbbbb",
        "shop/api-6c7d8e9f0a-ccccc",
        "shop/db-0",
        "shop/backup-28421980-q7x2m",
        "shop/debug",
        "monitoring/node-exporter-xk2p9",
    }
    assert {svc.key for svc in cluster.services} == {"default/kubernetes", "shop/web", "shop/api", "shop/db"}
    assert {(s.namespace, s.service_name) for s in cluster.endpoint_slices} == {
        ("default", "kubernetes"),
        ("shop", "web"),
    }
    assert {node.name for node in cluster.nodes} == {"node-a", "node-b"}


def test_pod_keeps_labels_uid_node_and_creation_time(pods: dict[str, Pod]) -> None:
    web = pods["shop/web-7d9f8b6c5d-abcde"]
    assert dict(web.labels) == {"app": "web", "pod-template-hash": "7d9f8b6c5d"}
    assert web.uid == "a1000000-0000-4000-8000-000000000001"
    assert web.node_name == "node-a"
    assert web.created == utc(2024, 1, 15, 8, 0, 0)
    assert web.ended is None
    assert web.phase == "Running"
    assert web.is_live


def test_namespace_labels_are_kept_and_metadata_name_label_is_added_when_absent(cluster: Cluster) -> None:
    assert dict(cluster.namespaces["shop"].labels) == {"kubernetes.io/metadata.name": "shop", "team": "payments"}
    # monitoring has no labels in the snapshot; the API server would have set this one
    assert dict(cluster.namespaces["monitoring"].labels) == {"kubernetes.io/metadata.name": "monitoring"}


def test_container_ports_keep_name_number_and_protocol(pods: dict[str, Pod]) -> None:
    assert pods["shop/web-7d9f8b6c5d-abcde"].container_ports == (
        ContainerPort(8080, "TCP", "http"),
        ContainerPort(9090, "TCP", "metrics"),
    )
    assert pods["shop/api-6c7d8e9f0a-bbbbb"].container_ports == (
        ContainerPort(8000, "TCP", "http"),
        ContainerPort(8000, "UDP", "http-udp"),
    )
    assert pods["shop/debug"].container_ports == ()


def test_dual_stack_pod_keeps_both_ips_with_pod_ip_first(pods: dict[str, Pod]) -> None:
    assert pods["shop/web-7d9f8b6c5d-abcde"].ips == ("10.244.1.15", "fd00:10:244:1::f")
    assert pods["shop/db-0"].ips == ("10.244.2.30",)


def test_pending_pod_has_no_ip_and_no_node(pods: dict[str, Pod]) -> None:
    pending = pods["shop/api-6c7d8e9f0a-ccccc"]
    assert pending.ips == ()
    assert pending.node_name is None
    assert pending.phase == "Pending"


def test_host_network_pod_is_marked_and_keeps_the_node_ip(pods: dict[str, Pod]) -> None:
    exporter = pods["monitoring/node-exporter-xk2p9"]
    assert exporter.host_network
    assert exporter.ips == ("192.168.10.11",)
    assert not pods["shop/web-7d9f8b6c5d-abcde"].host_network


def test_finished_job_pod_ends_when_its_container_finished(pods: dict[str, Pod]) -> None:
    backup = pods["shop/backup-28421980-q7x2m"]
    assert backup.phase == "Succeeded"
    assert backup.ended == utc(2024, 1, 15, 11, 41, 30)
    assert not backup.is_live
    assert backup.held_ip_at(utc(2024, 1, 15, 11, 41, 0))
    assert not backup.held_ip_at(utc(2024, 1, 15, 11, 42, 0))


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("shop/web-7d9f8b6c5d-abcde", Workload("Deployment", "web")),
        ("shop/api-6c7d8e9f0a-bbbbb", Workload("Deployment", "api")),
        ("shop/db-0", Workload("StatefulSet", "db")),
        ("monitoring/node-exporter-xk2p9", Workload("DaemonSet", "node-exporter")),
        ("shop/backup-28421980-q7x2m", Workload("CronJob", "backup")),
        ("shop/debug", Workload("Pod", "debug")),
    ],
)
def test_workload_is_derived_from_the_owner_reference(pods: dict[str, Pod], pod: str, workload: Workload) -> None:
    assert pods[pod].workload == workload


@pytest.mark.parametrize(
    ("pod", "from_owner_reference_only", "with_controllers_in_snapshot"),
    [
        # an Argo Rollout's ReplicaSet has no pod-template-hash: only the ReplicaSet object names the Rollout
        ("shop/checkout-6b8c9d7f5-p1q2r", Workload("ReplicaSet", "checkout-6b8c9d7f5"),
         Workload("Rollout", "checkout")),
        # orphaned by `kubectl delete deployment --cascade=orphan`: the ReplicaSet has no owner any more
        ("shop/legacy-7f8c9d6b5-x1y2z", Workload("Deployment", "legacy"), Workload("ReplicaSet", "legacy-7f8c9d6b5")),
        # a hand-made Job whose name ends in a date looks like a CronJob's until the Job is seen
        ("shop/reindex-20240115-m3n4b", Workload("CronJob", "reindex"), Workload("Job", "reindex-20240115")),
        ("shop/nightly-report-28421940-h5j6k", Workload("CronJob", "nightly-report"),
         Workload("CronJob", "nightly-report")),
    ],
)
def test_replicaset_and_job_objects_in_the_snapshot_take_precedence_over_naming_conventions(
    pod: str, from_owner_reference_only: Workload, with_controllers_in_snapshot: Workload
) -> None:
    assert pods_by_key(load(OWNERS / "pods.yaml"))[pod].workload == from_owner_reference_only
    assert pods_by_key(load(OWNERS))[pod].workload == with_controllers_in_snapshot


def test_service_keeps_selector_ports_named_target_ports_node_ports_and_cluster_ips(cluster: Cluster) -> None:
    services = {svc.key: svc for svc in cluster.services}
    web = services["shop/web"]
    assert web.type == "NodePort"
    assert dict(web.selector or {}) == {"app": "web"}
    assert web.ports == (
        ServicePort(port=80, protocol="TCP", name="http", target_port="http", node_port=30080),
        ServicePort(port=9090, protocol="TCP", name="metrics", target_port=9090, node_port=30090),
    )
    assert web.cluster_ips == ("10.96.10.10", "fd00:10:96::a")
    api = services["shop/api"]
    assert api.ports == (ServicePort(port=80, protocol="TCP", name=None, target_port="http"),)


def test_headless_service_has_no_cluster_ip_and_selectorless_service_no_selector(cluster: Cluster) -> None:
    services = {svc.key: svc for svc in cluster.services}
    assert services["shop/db"].cluster_ips == ()
    assert dict(services["shop/db"].selector or {}) == {"app": "db"}
    assert services["default/kubernetes"].selector is None
    assert services["default/kubernetes"].cluster_ips == ("10.96.0.1",)


def test_endpoint_slice_keeps_pod_targets_readiness_and_ports(cluster: Cluster) -> None:
    web = slice_for(cluster, "shop", "web")
    assert web.endpoints == (
        SliceEndpoint("shop", "web-7d9f8b6c5d-abcde", ("10.244.1.15",), ready=True),
        SliceEndpoint("shop", "web-7d9f8b6c5d-fghij", ("10.244.2.21",), ready=False),
    )
    assert web.ports == (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics"))


def test_endpoint_slice_endpoints_without_a_pod_target_are_dropped(cluster: Cluster) -> None:
    apiserver = slice_for(cluster, "default", "kubernetes")
    assert apiserver.endpoints == ()
    assert apiserver.ports == (ContainerPort(6443, "TCP", "https"),)


def test_node_keeps_internal_and_external_addresses_and_pod_cidrs(cluster: Cluster) -> None:
    nodes = {node.name: node for node in cluster.nodes}
    assert nodes["node-a"].addresses == ("192.168.10.11", "fd00:192:168:10::11")
    assert nodes["node-a"].pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert nodes["node-b"].addresses == ("192.168.10.12", "203.0.113.12")
    assert nodes["node-b"].pod_cidrs == ("10.244.2.0/24",)


# --- the same snapshot in every form ------------------------------------------------------------


def model(cluster: Cluster) -> dict[str, Any]:
    """Everything the loader produced, as plain comparable data."""

    def plain(obj: Any) -> Any:
        return repr(dataclasses.asdict(obj))

    return {
        "namespaces": {name: dict(ns.labels) for name, ns in cluster.namespaces.items()},
        "pods": sorted(plain(p) for p in cluster.pods),
        "services": sorted(plain(s) for s in cluster.services),
        "slices": sorted(plain(s) for s in cluster.endpoint_slices),
        "nodes": sorted(plain(n) for n in cluster.nodes),
    }


@pytest.mark.parametrize("other", [LIST_JSON, MULTI_DOC, DIRECTORY], ids=["json", "multi-document", "directory"])
def test_json_multi_document_and_directory_forms_give_the_same_model_as_the_yaml_list(
    cluster: Cluster, other: Path
) -> None:
    expected = model(cluster)
    assert len(expected["pods"]) == 9  # the comparison is not between two empty models
    assert model(load(other)) == expected


# --- several snapshots over time ----------------------------------------------------------------


def test_pod_seen_in_several_snapshots_is_kept_once_with_the_latest_view() -> None:
    cluster = load(IP_REUSE / "1-before.yaml", IP_REUSE / "2-after.yaml")
    pods = pods_by_key(cluster)
    assert set(pods) == {"shop/cart-6f7b8c9d4e-k2m4p", "shop/cart-6f7b8c9d4e-z9x8w", "shop/redis-0"}
    assert pods["shop/redis-0"].labels["role"] == "primary"


def test_terminating_pod_ends_at_its_deletion_timestamp() -> None:
    old = pods_by_key(load(IP_REUSE))["shop/cart-6f7b8c9d4e-k2m4p"]
    assert old.created == utc(2024, 1, 15, 9, 0, 0)
    assert old.ended == utc(2024, 1, 15, 10, 35, 30)
    assert not old.is_live


POD_VIEW = """\
apiVersion: v1
kind: Pod
metadata:
  name: cart-1
  namespace: shop
  uid: d2000000-0000-4000-8000-000000000001
  creationTimestamp: "2024-01-15T09:00:00Z"
  labels:
    app: cart
    seen: "{seen}"
{deletion}status:
  phase: Running
  podIP: 10.244.1.23
"""


@pytest.mark.parametrize("order", ["running-first", "terminating-first"])
def test_a_view_in_which_the_pod_was_deleted_is_newer_whatever_the_file_order(tmp_path: Path, order: str) -> None:
    running = write(tmp_path, "running.yaml", POD_VIEW.format(seen="running", deletion=""))
    deleting = '  deletionTimestamp: "2024-01-15T10:35:30Z"\n'
    terminating = write(tmp_path, "terminating.yaml", POD_VIEW.format(seen="terminating", deletion=deleting))
    paths = (running, terminating) if order == "running-first" else (terminating, running)
    (pod,) = load(*paths).pods
    assert pod.ended == utc(2024, 1, 15, 10, 35, 30)
    assert pod.labels["seen"] == "terminating"


# --- timestamps ---------------------------------------------------------------------------------


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """Run in a local time zone 10 hours from UTC, to catch timestamps read as local time."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Honolulu"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


POD_CREATED = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  creationTimestamp: {stamp}
status:
  podIP: 10.244.1.5
"""


@pytest.mark.parametrize(
    "stamp",
    ['"2024-01-15T10:00:00Z"', "2024-01-15T10:00:00Z", '"2024-01-15T12:00:00+02:00"', '"2024-01-15T10:00:00"'],
    ids=["quoted-Z", "unquoted-yaml-timestamp", "offset", "no-zone-is-utc"],
)
def test_timestamps_are_read_as_utc_whatever_the_local_time_zone(
    tmp_path: Path, far_from_utc: None, stamp: str
) -> None:
    path = write(tmp_path, "pod.yaml", POD_CREATED.format(stamp=stamp))
    (pod,) = load(path).pods
    assert pod.created == utc(2024, 1, 15, 10, 0, 0)


# --- bad input ----------------------------------------------------------------------------------


def snapshot_error(*paths: Path, require_pods: bool = False) -> str:
    with pytest.raises(SnapshotError) as raised:
        load(*paths, require_pods=require_pods)
    return raised.value.message


def test_invalid_yaml_names_the_file_and_line() -> None:
    path = BAD / "invalid-yaml.yaml"
    message = snapshot_error(path)
    # the problem's wording differs between libyaml and the pure-Python parser; the place does not
    assert message.startswith(f"{path}: invalid YAML: line 8: mapping values are not allowed")


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster.json", '{\n    "apiVersion": "v1",\n    "items": [,\n}\n')
    assert snapshot_error(path).startswith(f"{path}: invalid JSON at line 3 ")


def test_missing_metadata_name_names_the_file_and_document() -> None:
    path = BAD / "missing-name.yaml"
    assert snapshot_error(path) == f"{path}:doc 2: Pod: metadata.name is missing"


def test_bad_pod_ip_names_the_list_item_and_the_pod() -> None:
    path = BAD / "bad-pod-ip.yaml"
    assert snapshot_error(path) == f"{path}:doc 1 item 1: Pod shop/web-1: '10.244.1.300' is not an IP address"


def test_bad_timestamp_names_the_document_and_the_value() -> None:
    path = BAD / "bad-timestamp.json"
    assert snapshot_error(path) == f"{path}:doc 1 item 0: Pod shop/web-1: bad timestamp '15/01/2024 10:00'"


def test_missing_snapshot_file_is_a_snapshot_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert snapshot_error(path) == f"{path}: no such file or directory"


@pytest.mark.parametrize("kind", ["null", "5", "[Pod]"])
def test_kind_that_is_not_a_string_is_a_snapshot_error(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, "odd.yaml", f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: x\n")
    message = snapshot_error(path)
    assert message.startswith(f"{path}:doc 1: ")
    assert "kind" in message


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("spec", "spec: [hostNetwork]\n"),
        ("status", "status: Running\n"),
        ("spec.containers[0].ports[0]", "spec:\n  containers:\n  - name: web\n    ports: [8080]\n"),
    ],
)
def test_malformed_pod_fields_are_snapshot_errors_naming_the_field(tmp_path: Path, field: str, text: str) -> None:
    path = write(tmp_path, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n" + text)
    message = snapshot_error(path)
    assert message.startswith(f"{path}:doc 1: Pod web-1: ")
    assert field in message


def test_require_pods_rejects_a_snapshot_without_pods(tmp_path: Path) -> None:
    path = write(tmp_path, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    assert load(path).pods == []
    assert snapshot_error(path, require_pods=True) == f"{path}: snapshot has no pods"
    assert len(load(LIST_YAML, require_pods=True).pods) == 9
