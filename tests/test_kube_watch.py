"""The live cluster view (collector/kube.py) against a Kubernetes API server.

The server is ``tests/kube_emulator.py``: a stateful stand-in for kube-apiserver's list/watch semantics
over real HTTP on 127.0.0.1 (one resourceVersion counter, paged typed lists, chunked watch streams with
ADDED/MODIFIED/DELETED/BOOKMARK events, 410 Gone for a watch from a compacted version, watches cut
mid-stream, 503 while "restarting"), reached through a kubeconfig by the official ``kubernetes`` client,
so the client's own request, streaming and error code runs. The tests change objects in the emulator
as controllers and kubelets would and check what the source's Cluster says, at packet times before and
after each change.

Both the emulator (creationTimestamp) and the source (when an event was seen) read one fake clock the
tests set, so times are exact; the tests wait on the source's condition (``wait_for``), never sleep.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.collector.kube import KubeStats, LiveClusterSource, StaticClusterSource, api_client
from netpol_gen.collector.kube_watch import Backoff, WatchSettings
from netpol_gen.errors import InputError
from netpol_gen.model.cluster import Cluster, EndpointKind, Pod
from netpol_gen.service.wire import ClusterView, encode, read
from tests.kube_emulator import KubeEmulator
from tests.test_api_server_entity import KUBERNETES

T0 = 1_700_000_000.0
SETTINGS = WatchSettings(retention=3600.0, page_size=1, watch_timeout=60, connect_timeout=2.0, read_grace=5.0,
                         backoff=Backoff(initial=0.02, maximum=0.2))
WEB_IP, API_IP, API2_IP, CLUSTER_IP = "10.244.0.5", "10.244.0.6", "10.244.0.7", "10.96.0.20"
WAIT = 30.0  # a deadline, not a delay: generous so a loaded CI machine does not fail it


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


# --- API objects as the server returns them -------------------------------------------------------


def pod(name: str, ip: str | None, labels: dict[str, str], phase: str = "Running") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"metadata": {"name": name, "namespace": "shop", "labels": labels,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{labels['app']}-5d4f8",
                                              "controller": True}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "main", "ports": [
                {"containerPort": 8080, "name": "http", "protocol": "TCP"}]}]},
            "status": status}


def endpoint_slice(*backends: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "api-x7k2p", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "namespace": "shop", "name": name}} for name, ip in backends],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def seed(api: KubeEmulator) -> None:
    api.create("namespaces", {"metadata": {"name": "shop", "labels": {"team": "shop"}}})
    api.create("nodes", {"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.0.0/24"},
                         "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.10"}]}})
    api.create("pods", pod("web-1", WEB_IP, {"app": "web"}))
    api.create("pods", pod("api-1", API_IP, {"app": "api"}))
    api.create("services", {"metadata": {"name": "api", "namespace": "shop"},
                            "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "api"},
                                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    api.create("endpointslices", endpoint_slice(("api-1", API_IP)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(tmp_path: Path, clock: Clock) -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(clock)
    seed(emulator)
    with emulator.serving(tmp_path / "kubeconfig"):
        yield emulator


def started(tmp_path: Path, clock: Clock, settings: WatchSettings = SETTINGS) -> LiveClusterSource:
    source = LiveClusterSource.connect(str(tmp_path / "kubeconfig"), settings, clock)
    source.start()
    return source


def stopped(source: LiveClusterSource) -> None:
    source.stop()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("kube-") and t.name != "kube-emulator"]


@pytest.fixture
def source(api: KubeEmulator, tmp_path: Path, clock: Clock) -> Iterator[LiveClusterSource]:
    live = started(tmp_path, clock)
    assert live.wait_synced(WAIT)
    yield live
    stopped(live)


def all_watching(api: KubeEmulator) -> None:
    assert api.wait_for(api.streaming, WAIT), "not every resource is being watched"


def wait_until(source: LiveClusterSource, predicate: Callable[[], bool]) -> None:
    assert source.wait_for(predicate, WAIT), "the source never got there"


def seen(source: LiveClusterSource, check: Callable[[Cluster], bool]) -> None:
    wait_until(source, lambda: check(source.current()))


def counted(source: LiveClusterSource, check: Callable[[KubeStats], bool]) -> None:
    wait_until(source, lambda: check(source.stats))


def pod_at(source: LiveClusterSource, ip: str, ts: float) -> Pod | None:
    return source.current().endpoint(ip, ts).pod


# --- tests ---------------------------------------------------------------------------------------


def test_the_listed_cluster_resolves_pods_nodes_and_services(api: KubeEmulator, source: LiveClusterSource) -> None:
    cluster = source.current()
    assert source.current() is cluster  # nothing changed: the same object, caches and all
    web = cluster.endpoint(WEB_IP, T0 + 1).pod
    assert web is not None and web.key == "shop/web-1" and dict(web.labels) == {"app": "web"}
    assert str(web.workload) == "ReplicaSet/web-5d4f8"  # no pod-template-hash label: the owner as it is
    assert cluster.endpoint("10.0.0.10", T0 + 1).kind is EndpointKind.NODE
    assert dict(cluster.namespace_labels("shop")) == {"team": "shop", "kubernetes.io/metadata.name": "shop"}
    target = cluster.service_target(CLUSTER_IP, 80, "TCP", T0 + 1)
    assert target is not None and [(b.pod.name, b.port) for b in target.backends] == [("api-1", 8080)]
    for resource in ("namespaces", "nodes", "pods", "services", "endpointslices"):
        assert api.wait_for(lambda r=resource: bool(api.watches(r)), WAIT)
        assert len(api.lists(resource)) == 1
        assert api.watches(resource)[0].resource_version == str(api.version)  # from the list's version
    pages = [r for r in api.requests if r.resource == "pods" and not r.watch]
    assert len(pages) == 2 and pages[1].page  # two pods, one per page
    assert source.stats == KubeStats(synced=True)


def test_ip_reuse_after_a_restart_keeps_old_traffic_on_the_old_pod(
    api: KubeEmulator, source: LiveClusterSource, clock: Clock
) -> None:
    before = source.current()
    clock.now = T0 + 10
    api.update("pods", "web-1", lambda p: p["metadata"]["labels"].update(tier="front"), "shop")
    seen(source, lambda c: (c.pod_named("shop", "web-1") or pytest.fail()).labels.get("tier") == "front")
    assert source.current() is not before
    clock.now = T0 + 100
    api.delete("pods", "web-1", "shop")
    seen(source, lambda c: c.pod_at(WEB_IP) is None)
    clock.now = T0 + 200  # the replacement is created without an address ...
    api.create("pods", pod("web-2", None, {"app": "web"}, phase="Pending"))
    seen(source, lambda c: c.pod_named("shop", "web-2") is not None)
    clock.now = T0 + 250  # ... and gets the old pod's
    api.update("pods", "web-2", lambda p: p["status"].update(phase="Running", podIP=WEB_IP,
                                                            podIPs=[{"ip": WEB_IP}]), "shop")
    seen(source, lambda c: c.pod_at(WEB_IP) is not None)

    old = pod_at(source, WEB_IP, T0 + 50)
    assert old is not None and old.name == "web-1" and old.labels["tier"] == "front" and old.ended == T0 + 100
    assert source.current().endpoint(WEB_IP, T0 + 150).kind is EndpointKind.UNKNOWN_CLUSTER_IP
    assert pod_at(source, WEB_IP, T0 + 220) is None  # web-2 existed but did not hold the address yet
    new = pod_at(source, WEB_IP, T0 + 300)
    assert new is not None and new.name == "web-2"

    clock.now = T0 + 100 + SETTINGS.retention + 1  # past the horizon the deleted pod is forgotten
    assert [p.name for p in source.current().pods if p.name.startswith("web")] == ["web-2"]


def test_a_pod_whose_address_changes_keeps_the_old_one_until_then(
    api: KubeEmulator, source: LiveClusterSource, clock: Clock
) -> None:
    clock.now = T0 + 60  # sandbox recreated (node reboot): same pod, new address
    api.update("pods", "api-1", lambda p: p["status"].update(podIP="10.244.0.9", podIPs=[{"ip": "10.244.0.9"}]),
               "shop")
    seen(source, lambda c: c.pod_at("10.244.0.9") is not None)
    then, now = pod_at(source, API_IP, T0 + 30), pod_at(source, "10.244.0.9", T0 + 90)
    assert then is not None and now is not None and then.uid == now.uid and then is not now
    assert pod_at(source, API_IP, T0 + 90) is None and pod_at(source, "10.244.0.9", T0 + 30) is None


def test_a_finished_pod_holds_its_address_until_it_finished(
    api: KubeEmulator, source: LiveClusterSource, clock: Clock
) -> None:
    clock.now = T0 + 40  # a Job's pod completes; it stays in the API, its address is free for reuse
    finished_at = {"state": {"terminated": {"exitCode": 0, "finishedAt": "2023-11-14T22:13:50Z"}}}  # T0 + 30
    api.update("pods", "api-1", lambda p: p["status"].update(phase="Succeeded", containerStatuses=[finished_at]),
               "shop")
    seen(source, lambda c: c.pod_at(API_IP) is None)
    clock.now = T0 + 60
    api.create("pods", pod("cart-1", API_IP, {"app": "cart"}))
    seen(source, lambda c: c.pod_at(API_IP) is not None)
    done = pod_at(source, API_IP, T0 + 29)
    assert done is not None and done.name == "api-1" and done.ended == T0 + 30
    assert pod_at(source, API_IP, T0 + 45) is None
    assert (pod_at(source, API_IP, T0 + 61) or pytest.fail()).name == "cart-1"


def test_service_and_endpointslice_changes_move_the_backends(api: KubeEmulator, source: LiveClusterSource) -> None:
    def backends(port: int = 80) -> list[str] | None:
        target = source.current().service_target(CLUSTER_IP, port, "TCP", T0 + 1)
        return None if target is None else sorted(b.pod.name for b in target.backends)

    api.create("pods", pod("api-2", API2_IP, {"app": "api"}))
    two = endpoint_slice(("api-1", API_IP), ("api-2", API2_IP))["endpoints"]
    api.update("endpointslices", "api-x7k2p", lambda s: s.update(endpoints=two), "shop")
    wait_until(source, lambda: backends() == ["api-1", "api-2"])
    api.update("services", "api", lambda s: s["spec"]["ports"][0].update(port=8081), "shop")
    wait_until(source, lambda: backends() is None and backends(8081) == ["api-1", "api-2"])
    api.delete("endpointslices", "api-x7k2p", "shop")  # no slice: the selector picks the backends
    api.update("pods", "api-2", lambda p: p["metadata"]["labels"].update(app="api-canary"), "shop")
    wait_until(source, lambda: backends(8081) == ["api-1"])
    api.delete("services", "api", "shop")
    wait_until(source, lambda: backends(8081) is None)


def test_a_dropped_watch_resumes_from_the_last_version_without_repeating_events(
    api: KubeEmulator, source: LiveClusterSource
) -> None:
    api.create("pods", pod("cart-1", "10.244.0.20", {"app": "cart"}))
    counted(source, lambda s: s.events == 1)
    last = str(api.version)
    all_watching(api)
    api.drop_watches()
    api.create("pods", pod("cart-2", "10.244.0.21", {"app": "cart"}))
    counted(source, lambda s: s.watch_restarts == 5 and s.events == 2)
    seen(source, lambda c: c.pod_at("10.244.0.21") is not None)
    assert api.watches("pods")[-1].resource_version == last  # right after cart-1, not from the list
    assert len(api.lists("pods")) == 1 and source.stats.relists == 0
    assert source.stats.errors >= 1  # the cut streams: counted, retried after a backoff


def test_bookmarks_let_an_idle_watch_resume_after_a_compaction(api: KubeEmulator, source: LiveClusterSource) -> None:
    api.create("pods", pod("cart-1", "10.244.0.20", {"app": "cart"}))  # the namespace watch sees nothing
    counted(source, lambda s: s.events == 1)
    all_watching(api)
    api.bookmark()
    counted(source, lambda s: s.bookmarks == 5)
    bookmarked = str(api.version)
    api.compact()
    api.drop_watches()
    api.create("namespaces", {"metadata": {"name": "billing"}})
    seen(source, lambda c: "billing" in c.namespaces)
    assert api.watches("namespaces")[-1].resource_version == bookmarked
    assert source.stats.relists == 0 and len(api.lists("namespaces")) == 1


def test_after_an_outage_410_gone_relists_and_deletions_are_reconciled(
    api: KubeEmulator, source: LiveClusterSource, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="netpol_gen.collector.kube")
    all_watching(api)  # a watch still being opened when the outage starts would survive it unseen
    api.set_available(False)
    counted(source, lambda s: s.errors >= 10)  # every resource retried, backing off
    clock.now = T0 + 500  # meanwhile, unseen: api-1 is deleted, web-1 relabelled, history compacted
    api.delete("pods", "api-1", "shop")
    api.update("pods", "web-1", lambda p: p["metadata"]["labels"].update(tier="front"), "shop")
    api.compact()
    api.set_available(True)
    counted(source, lambda s: s.relists == 5)  # every watch was from before the compaction
    cluster = source.current()
    gone = cluster.pod_named("shop", "api-1", T0 + 499)
    assert gone is not None and gone.ended == T0 + 500  # deleted as of the relist
    assert cluster.pod_at(API_IP) is None and (cluster.pod_at(WEB_IP) or pytest.fail()).labels["tier"] == "front"
    assert len(api.lists("pods")) == 2
    assert api.wait_for(lambda: api.watches("pods")[-1].resource_version == str(api.version), WAIT)
    messages = [(r.getMessage(), getattr(r, "fields", {}).get("resource")) for r in caplog.records]
    assert ("resource version expired: listing again", "pods") in messages
    assert ("relist: objects deleted while not watching", "pods") in messages
    assert ("list/watch failed: retrying", "pods") in messages


def test_without_an_api_server_the_source_is_not_synced_until_it_comes(
    api: KubeEmulator, tmp_path: Path, clock: Clock
) -> None:
    api.set_available(False)
    live = started(tmp_path, clock)
    try:
        assert not live.wait_synced(0.3)
        assert live.stats.errors >= 5 and not live.current().pods
        api.set_available(True)
        assert live.wait_synced(WAIT)
        assert {p.name for p in live.current().pods} == {"web-1", "api-1"}
    finally:
        stopped(live)


def test_a_watch_the_server_ends_is_renewed_from_its_version(api: KubeEmulator, tmp_path: Path, clock: Clock) -> None:
    live = started(tmp_path, clock, dataclasses.replace(SETTINGS, watch_timeout=1))
    try:
        assert live.wait_synced(WAIT)
        api.create("pods", pod("cart-1", "10.244.0.20", {"app": "cart"}))
        last = str(api.version)
        assert live.wait_for(lambda: live.stats.watch_restarts >= 5, WAIT)  # each ended after timeoutSeconds
        assert api.wait_for(lambda: len(api.watches("pods")) >= 2 and api.watches("pods")[-1].resource_version == last,
                            WAIT)
        assert live.stats.errors == 0 and live.stats.relists == 0 and live.stats.events == 1
    finally:
        stopped(live)


def test_backoff_grows_to_its_bound_with_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, jitter=0.5)
    delays = [backoff.delay(n) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5 and 2.0 <= delays[3] <= 4.0
    assert all(15.0 <= d <= 30.0 for d in delays[6:])
    assert len({backoff.delay(20) for _ in range(20)}) > 1  # not in step with every other collector


def test_no_kubeconfig_is_a_one_line_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InputError, match=r"^kubernetes API: no access to a cluster: .*kube-config"):
        api_client(str(tmp_path / "missing"))


def test_a_static_source_is_its_snapshot() -> None:
    cluster = Cluster.build()
    assert StaticClusterSource(cluster).current() is cluster


def test_the_api_servers_addresses_come_from_the_kubernetes_services_slice(
        api: KubeEmulator, source: LiveClusterSource) -> None:
    """The collector learns Cilium's kube-apiserver addresses as it watches slices (no pod behind them);
    sent to the store in its cluster view, they survive the wire."""
    assert source.current().api_servers == frozenset()
    api.create("endpointslices", KUBERNETES[1])
    wait_until(source, lambda: source.current().api_servers == {"172.20.0.5"})
    api.update("endpointslices", "kubernetes",
               lambda s: s["endpoints"].append({"addresses": ["172.20.0.6"], "conditions": {"ready": False}}),
               "default")
    api.update("endpointslices", "kubernetes",
               lambda s: s["endpoints"].append({"addresses": ["172.20.0.7"]}), "default")
    wait_until(source, lambda: source.current().api_servers == {"172.20.0.5", "172.20.0.7"})  # ready ones
    sent = read(ClusterView, encode(ClusterView.of(source.current())))
    assert sent.cluster().api_servers == {"172.20.0.5", "172.20.0.7"}
