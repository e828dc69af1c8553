"""Cilium's entity ``kube-apiserver``: the API server's addresses learnt from the ``default/kubernetes``
Service's EndpointSlice (in a snapshot here; the collector's kube watch parses slices the same way), kept
by the store, emitted by ``export --target cilium`` as ``toEntities: [kube-apiserver]`` (validated against
the shipped Cilium CRD schema) and judged by the evaluator with those addresses.

The bundled example's snapshot plus the two objects every cluster has: the ``kubernetes`` Service
(ClusterIP 10.96.0.1:443, no selector) and its slice naming the API server at 172.20.0.5:6443 with no
pod behind it, as a managed control plane has. The web pod reaches the API server through the ClusterIP,
as in-cluster clients do. Stands in for a workload that watches the API (an operator, a controller).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from netpol_gen.evaluator.cilium import parse_cilium
from netpol_gen.evaluator.engine import Evaluator
from netpol_gen.model import Flow, load_cluster
from netpol_gen.store.cluster_view import load_cluster as stored_cluster
from netpol_gen.store.db import open_store
from tests.cli import run_cli
from tests.test_export_targets import EXAMPLE, check, export, schema_errors

API_SERVER, CLUSTER_IP, WEB = "172.20.0.5", "10.96.0.1", "10.244.1.14"
KUBERNETES = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": CLUSTER_IP, "clusterIPs": [CLUSTER_IP], "type": "ClusterIP",
              "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
     "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
     "endpoints": [{"addresses": [API_SERVER], "conditions": {"ready": True}}],
     "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
]


def _files(tmp_path: Path) -> tuple[Path, Path]:
    """The API server's objects, and the example's flows plus web's connections to the API."""
    objects = tmp_path / "kubernetes.yaml"
    objects.write_text(yaml.safe_dump_all(KUBERNETES))
    flows = tmp_path / "flows.jsonl"
    api = [Flow(WEB, CLUSTER_IP, 443, "TCP", 41000 + i, 1795305605.0 + i).to_json() for i in range(2)]
    flows.write_text((EXAMPLE / "flows.jsonl").read_text() + "\n".join(api) + "\n")
    return objects, flows


def test_the_api_server_is_learnt_exported_as_its_entity_and_judged(tmp_path: Path) -> None:
    objects, flows = _files(tmp_path)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    learnt = run_cli("import", "--db", db, "--cluster", str(EXAMPLE / "cluster.yaml"), "--cluster", str(objects),
                     "--flows", str(flows))
    assert learnt.exit_code == 0, learnt.output
    store = open_store(db)
    try:
        assert stored_cluster(store).api_servers == {API_SERVER}
    finally:
        store.close()

    out = tmp_path / "policies"
    objects_out = {o["metadata"]["name"]: o for o in export(db, "cilium", out)}
    assert {name: schema_errors(o) for name, o in objects_out.items() if schema_errors(o)} == {}
    to_api = [r for r in objects_out["web-netpol-gen"]["spec"]["egress"] if "kube-apiserver" in r.get("toEntities", [])]
    assert to_api == [{"toEntities": ["kube-apiserver"], "toPorts": [{"ports": [{"port": "6443", "protocol": "TCP"}]}]}]
    assert not any(API_SERVER in str(o["spec"]) for o in objects_out.values())  # by entity, not by address

    # the evaluator judges the entity with the API server's addresses: every flow allowed, through the ClusterIP
    report = check(EXAMPLE / "cluster.yaml", out, flows, "--cluster", str(objects), "--db", db)
    assert report["summary"]["allowed"] == report["summary"]["flows"], report["denied"]
    # without the slice nothing says where the API server is: those two connections are denied
    blind = check(EXAMPLE / "cluster.yaml", out, flows, "--db", db)
    assert {(d["dst"], d["port"]) for d in blind["denied"]} == {(CLUSTER_IP, 443)}
    assert blind["summary"]["denied"] == 2


def test_the_entity_matches_only_the_api_servers_addresses(tmp_path: Path) -> None:
    objects, _ = _files(tmp_path)
    cluster = load_cluster([str(EXAMPLE / "cluster.yaml"), str(objects)])
    policy = parse_cilium({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "web", "namespace": "booking"},
        "spec": {"endpointSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
                 "egress": [{"toEntities": ["kube-apiserver"]}]}})
    assert not policy.notes
    evaluator = Evaluator(cluster, [policy])

    def allowed(dst: str, port: int) -> bool:
        return all(v.allowed for v in evaluator.judge_flow(Flow(WEB, dst, port, "TCP", 40000, 1795305605.0)).verdicts)
    assert allowed(API_SERVER, 6443) and allowed(CLUSTER_IP, 443)
    assert not allowed("172.20.0.6", 6443) and not allowed("10.0.0.12", 10250)  # another address, a remote node
