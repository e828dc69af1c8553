"""The policies in force, watched from the Kubernetes API, judged against learnt traffic (drift after enforcing).

The API server is ``tests/kube_emulator.py`` (real HTTP, list+watch with resourceVersions, the official
``kubernetes`` client): it serves NetworkPolicies and one CRD kind (CiliumNetworkPolicy) and answers 404 for
the others, as a cluster without those CNIs does. Policies are created, changed and deleted there as a
GitOps controller would; the store is on SQLite and PostgreSQL; batches go through ``serve`` over real HTTP.
Stands in for an operator who enforced policies and runs ``watch --set in-force`` to see what the CNI drops.
Tests wait on the watch's condition (``wait_for``: a state was published), never sleep.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.collector.kube import api_client
from netpol_gen.collector.kube_policies import PolicyWatch
from netpol_gen.collector.kube_watch import Backoff, WatchSettings
from netpol_gen.model import load_cluster
from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.client import post_batch
from netpol_gen.service.server import create_app
from netpol_gen.service.synced_sets import IN_FORCE, sync_in_force
from netpol_gen.store.db import Store, open_store
from tests.cli import run_cli
from tests.kube_emulator import KubeEmulator
from tests.serving import TOKEN, ThreadServer, free_port, wait_ready
from tests.test_cli_check import installed_command
from tests.test_shadow import CLUSTER, FAST, OMITTED, _batch, _edge, _flows

SETTINGS = WatchSettings(watch_timeout=60, connect_timeout=2.0, read_grace=5.0,
                         backoff=Backoff(initial=0.02, maximum=0.2))
WAIT = 30.0  # a deadline, not a delay

POSTGRES = {  # backends may reach postgres, anyone its exporter; the nightly job is left out
    "metadata": {"name": "postgres", "namespace": "booking"},
    "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}, "policyTypes": ["Ingress"],
             "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "backend"}}}], "ports": [{"port": 5432}]},
                         {"ports": [{"port": 9187}]}]},
}
REDIS = {  # Cilium: only auth may reach redis
    "metadata": {"name": "redis", "namespace": "booking"},
    "spec": {"endpointSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
             "ingress": [{"fromEndpoints": [{"matchLabels": {"app.kubernetes.io/name": "auth"}}]}]},
}


class InForce:
    """A PolicyWatch publishing into ``store`` as serve --in-force does."""

    def __init__(self, store: Store, kubeconfig: Path) -> None:
        self.watch = PolicyWatch(api_client(str(kubeconfig)), lambda docs: sync_in_force(store, "kubernetes", docs),
                                 SETTINGS, settle=0.05)

    def published(self, names: set[str]) -> None:
        """Wait until the latest state published holds exactly the policies ``names`` (``where`` of each)."""
        def holds() -> bool:
            return bool(self.watch.published) and {d.where for d in self.watch.published[-1]} == names
        assert self.watch.wait_for(holds, WAIT), f"never published {names}"


def _watch(url: str) -> list[dict[str, Any]]:
    outcome = run_cli("watch", "--server", url, "--token", TOKEN, "--set", IN_FORCE, "--format", "jsonl")
    assert outcome.exit_code == 0, outcome.output
    return [json.loads(line) for line in outcome.stdout.splitlines()]


def test_denials_by_the_policies_in_force_follow_the_api_as_they_change(
        store_url: str, kube_api: tuple[KubeEmulator, Path]) -> None:
    emulator, kubeconfig = kube_api
    emulator.create("networkpolicies", POSTGRES)
    store = open_store(store_url)
    in_force = InForce(store, kubeconfig)
    server = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    in_force.watch.start()
    try:
        in_force.published({"cluster:NetworkPolicy.networking.k8s.io booking/postgres"})
        cluster = load_cluster([CLUSTER])
        assert post_batch(server.url, TOKEN, _batch(_flows()), "b1", cluster=cluster, retry=FAST)
        first = _watch(server.url)
        assert [_edge(r) | {"set": "proposed"} for r in first] == [OMITTED]
        assert first[0]["side"] == "ingress" and first[0]["policies"] == ["booking/postgres"]

        # GitOps: the job is let in, and a Cilium policy now guards redis
        emulator.update("networkpolicies", "postgres", lambda np: np["spec"]["ingress"][0]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nightly-report"}}}), namespace="booking")
        emulator.create("ciliumnetworkpolicies", REDIS)
        in_force.published({"cluster:NetworkPolicy.networking.k8s.io booking/postgres",
                            "cluster:CiliumNetworkPolicy.cilium.io booking/redis"})
        assert "nightly-report" in json.dumps(in_force.watch.published[-1][0].obj)
        assert post_batch(server.url, TOKEN, _batch(_flows()), "b2", retry=FAST)
        second = {(r["src"], r["dst"], r["port"]): r for r in _watch(server.url)}
        assert second[("booking/CronJob/nightly-report", "booking/StatefulSet/postgres", 5432)]["connections"] == 1
        redis = {src for (src, dst, _), r in second.items() if dst == "booking/Deployment/redis"}
        assert redis == {"booking/Deployment/booking", "booking/Deployment/web"}  # auth is let in
        assert {tuple(r["policies"]) for r in second.values() if r["dst"] == "booking/Deployment/redis"} == {
            ("cilium:booking/redis",)}

        # nothing in force any more: nothing new is denied, what was denied stays on record
        emulator.delete("networkpolicies", "postgres", namespace="booking")
        emulator.delete("ciliumnetworkpolicies", "redis", namespace="booking")
        in_force.published(set())
        assert post_batch(server.url, TOKEN, _batch(_flows()), "b3", retry=FAST)
        assert {(r["src"], r["dst"], r["connections"]) for r in _watch(server.url)} == {
            (r["src"], r["dst"], r["connections"]) for r in second.values()}
        listed = run_cli("shadow", "list", "--server", server.url, "--token", TOKEN).stdout
        assert listed.startswith(f"{IN_FORCE}\t0 policies")
    finally:
        in_force.watch.stop()
        server.stop()
        store.close()


def test_the_same_state_twice_writes_nothing_and_a_bad_one_keeps_the_last_good(store_url: str) -> None:
    """Stands in for two serve replicas publishing the same state, then a policy the evaluator refuses."""
    from netpol_gen.errors import PolicyError
    from netpol_gen.model.documents import Document

    good = [Document("cluster:NetworkPolicy booking/postgres",
                     {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **POSTGRES})]
    bad = [Document("cluster:NetworkPolicy booking/x", {"apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy", "metadata": {"name": "x", "namespace": "booking"},
                    "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}})]
    store = open_store(store_url)
    try:
        assert sync_in_force(store, "kubernetes", good) is True
        assert sync_in_force(store, "kubernetes", good) is False
        with pytest.raises(PolicyError, match="booking/x"):
            sync_in_force(store, "kubernetes", good + bad)
        listed = run_cli("shadow", "list", "--db", store_url).stdout
        assert listed.startswith(f"{IN_FORCE}\t1 policies")
        taken = run_cli("shadow", "add", IN_FORCE, str(Path(CLUSTER).parent / "policies"), "--db", store_url)
        assert taken.exit_code == 2 and "serve --in-force" in taken.stderr
    finally:
        store.close()


def wait_listed(url: str, prefix: str) -> str:
    """``shadow list --server`` once serve (started) lists a set as ``prefix`` says, within WAIT (a
    deadline: serve starting beside a full parallel test run took over 10 s)."""
    wait_ready(url, deadline=WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        listed = run_cli("shadow", "list", "--server", url, "--token", TOKEN).stdout
        if listed.startswith(prefix):
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.05)  # polling interval, not synchronisation


def test_serve_in_force_with_a_kubeconfig_keeps_the_set(kube_api: tuple[KubeEmulator, Path], tmp_path: Path) -> None:
    """The command's wiring: ``serve --in-force --kubeconfig F`` (a real process) publishes the set."""
    emulator, kubeconfig = kube_api
    emulator.create("networkpolicies", POSTGRES)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([installed_command(), "serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
                              "--listen", f"127.0.0.1:{port}", "--token-file", str(token), "--in-force",
                              "--kubeconfig", str(kubeconfig)], stderr=subprocess.PIPE, text=True)
    try:
        assert "kubernetes http://127.0.0.1:" in wait_listed(url, f"{IN_FORCE}\t1 policies")
    finally:
        serve.terminate()
        serve.wait(WAIT)
