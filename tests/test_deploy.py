"""deploy/: every overlay builds with kustomize, every object validates (strict) against a recent
Kubernetes OpenAPI schema, RBAC grants no verb beyond the listed ones, the collector DaemonSet asks for
no privilege beyond hostNetwork and NET_RAW/NET_ADMIN (the components/socket-tables adds hostPID and
SYS_PTRACE for the socket-table source, and nothing else), and the store's own NetworkPolicy, judged by
netpol-gen's evaluator, admits the host-network collectors on the store port and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from netpol_gen.cli.main import cli
from netpol_gen.collector.kube_policies import POLICY_KINDS
from netpol_gen.evaluator import Evaluator, parse_policy
from netpol_gen.model import Cluster, Namespace, Node, Pod, Workload
from netpol_gen.model.cluster import Endpoint, EndpointKind

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
OVERLAYS = ["sqlite", "postgres"]
K8S_VERSION = kubernetes_validate.latest_version()  # the newest schema the package ships
VIEW = {"get", "list", "watch"}
VIEWED = {("", "pods"), ("", "namespaces"), ("", "services"), ("", "nodes"),
          ("discovery.k8s.io", "endpointslices"), ("networking.k8s.io", "networkpolicies")}
VIEWED |= {(kind.api_version.split("/")[0], kind.plural) for kind in POLICY_KINDS}  # serve --in-force
NODE_CIDR = "10.0.0.0/16"  # what deploy/components/node-cidr sets
STORE_PORT = 8080

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl (with built-in kustomize) is not installed; Debian's kubernetes-client 1.20 is too old "
           "for kustomize components, install kubectl >= 1.27 from pkgs.k8s.io to run these tests")


def _build(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(DEPLOY / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _build(request.param)


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_every_object_validates_strictly_against_the_kubernetes_schema(objects: list[dict[str, Any]]) -> None:
    kinds = sorted({o["kind"] for o in objects})
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Deployment",
            "Service", "NetworkPolicy"} <= set(kinds)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "netpol-gen", obj["metadata"]["name"]


def test_the_overlays_choose_the_database() -> None:
    store = {overlay: _one(_build(overlay), "Deployment", "netpol-gen-store") for overlay in OVERLAYS}
    env = {overlay: d["spec"]["template"]["spec"]["containers"][0]["env"] for overlay, d in store.items()}
    assert env["sqlite"] == [{"name": "NETPOL_GEN_DB", "value": "sqlite:////data/netpol-gen.db"}]
    assert env["postgres"][0]["valueFrom"]["secretKeyRef"] == {"name": "netpol-gen-db", "key": "url"}
    assert store["sqlite"]["spec"]["strategy"]["type"] == "Recreate"  # one writer on the file
    assert (store["sqlite"]["spec"]["replicas"], store["postgres"]["spec"]["replicas"]) == (1, 2)
    budget = _one(_build("postgres"), "PodDisruptionBudget", "netpol-gen-store")
    assert budget["spec"]["selector"]["matchLabels"] == store["postgres"]["spec"]["selector"]["matchLabels"]
    assert not [o for o in _build("sqlite") if o["kind"] == "PodDisruptionBudget"]


def test_rbac_grants_only_the_listed_verbs(objects: list[dict[str, Any]]) -> None:
    rules = [(group, resource, frozenset(rule["verbs"]))
             for role in objects if role["kind"] in ("ClusterRole", "Role")
             for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]]
    allowed = {(g, r): VIEW for g, r in VIEWED} | {("authentication.k8s.io", "tokenreviews"): {"create"},
                                                   ("", "configmaps"): VIEW}
    for group, resource, verbs in rules:
        assert verbs <= allowed.get((group, resource), set()), (group, resource, verbs)
        assert "*" not in (group, resource)
    assert {(g, r) for g, r, _ in rules} == set(allowed)
    # serve --shadow-configmap: the one ConfigMap it is told to watch, in its namespace, for the store only
    (configmaps,) = [(role, rule) for role in objects if role["kind"] in ("ClusterRole", "Role")
                     for rule in role["rules"] if "configmaps" in rule["resources"]]
    role, rule = configmaps
    args = _one(objects, "Deployment", "netpol-gen-store")["spec"]["template"]["spec"]["containers"][0]["args"]
    namespace, name = _flag(args, "--shadow-configmap").split("/")
    assert (role["kind"], role["metadata"]["namespace"], rule["resourceNames"]) == ("Role", namespace, [name])
    binding = _one(objects, "RoleBinding", role["metadata"]["name"])
    assert [s["name"] for s in binding["subjects"]] == ["netpol-gen-store"]
    tokenreview = _one(objects, "ClusterRoleBinding", "netpol-gen-tokenreview")
    assert [s["name"] for s in tokenreview["subjects"]] == ["netpol-gen-store"]  # collectors cannot review


def test_the_collector_asks_for_no_privilege_beyond_the_listed_ones(objects: list[dict[str, Any]]) -> None:
    pod = _one(objects, "DaemonSet", "netpol-gen-collector")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    assert {"operator": "Exists"} in pod["tolerations"]  # every node
    assert all("hostPath" not in volume for volume in pod["volumes"])
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    probes = {container[p]["httpGet"]["path"]: container[p]["httpGet"]["port"]
              for p in ("livenessProbe", "readinessProbe")}
    assert probes == {"/healthz": 9090, "/readyz": 9090}
    assert "--health=0.0.0.0:9090" in container["args"]
    assert "--established-sources=conntrack" in container["args"]  # NET_ADMIN reads it: nothing more asked
    store = _one(objects, "Deployment", "netpol-gen-store")["spec"]["template"]["spec"]
    assert store["securityContext"]["runAsNonRoot"] is True
    assert store["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def _with_socket_tables(tmp_path: Path, overlay: str) -> list[dict[str, Any]]:
    """``overlay`` plus components/socket-tables, as a user's own overlay would add it."""
    here = tmp_path / "with-socket-tables"
    here.mkdir()
    rel = Path(os.path.relpath(DEPLOY, here))  # kustomize refuses absolute resource paths
    (here / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(rel / "overlays" / overlay)], "components": [str(rel / "components" / "socket-tables")]}))
    out = subprocess.run([str(KUBECTL), "kustomize", str(here)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_socket_tables_component_adds_only_what_that_source_needs(tmp_path: Path, overlay: str) -> None:
    """The socket-table source reads /proc/<pid>/net/tcp of every pod: hostPID and SYS_PTRACE, nothing else."""
    base = _one(_build(overlay), "DaemonSet", "netpol-gen-collector")["spec"]["template"]["spec"]
    built = _with_socket_tables(tmp_path, overlay)
    for obj in built:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    pod = _one(built, "DaemonSet", "netpol-gen-collector")["spec"]["template"]["spec"]
    assert pod.pop("hostPID") is True and not pod.get("hostIPC")
    (container,), (base_container,) = pod["containers"], base["containers"]
    assert container["securityContext"].pop("capabilities") == {
        "drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN", "SYS_PTRACE"]}
    base_container["securityContext"].pop("capabilities")
    args = container.pop("args")
    changed = [(a, b) for a, b in zip(base_container.pop("args"), args, strict=True) if a != b]
    assert changed == [("--established-sources=conntrack", "--established-sources=conntrack,sockets")]
    assert {k: v for k, v in pod.items() if k != "containers"} == {k: v for k, v in base.items() if k != "containers"}
    assert container == base_container  # nothing else changed
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None
    with command.make_context(args[0], list(args[1:]), resilient_parsing=False) as ctx:
        assert ctx.params["established"] == ("conntrack", "sockets")


def _pod(name: str, namespace: str, labels: dict[str, str], ip: str, node: str, host_network: bool = False) -> Pod:
    return Pod(namespace, name, f"uid-{name}", labels, (ip,), Workload("Deployment", name), host_network, node)


def test_the_store_network_policy_admits_collectors_on_the_store_port_only(objects: list[dict[str, Any]]) -> None:
    policy = parse_policy(_one(objects, "NetworkPolicy", "netpol-gen-store"))
    store = _one(objects, "Deployment", "netpol-gen-store")
    store_pod = _pod("store", "netpol-gen", store["spec"]["template"]["metadata"]["labels"], "10.244.2.5",
                     "node-2")  # not the collector's node: traffic from a pod's own node is always allowed
    other_pod = _pod("web", "shop", {"app": "web"}, "10.244.2.7", "node-2")
    collector = _pod("collector", "netpol-gen", {"app.kubernetes.io/name": "netpol-gen-collector"}, "10.0.3.4",
                     "node-1", host_network=True)
    cluster = Cluster.build(
        namespaces=[Namespace("netpol-gen", {"kubernetes.io/metadata.name": "netpol-gen"}),
                    Namespace("shop", {"kubernetes.io/metadata.name": "shop"})],
        pods=[store_pod, other_pod, collector],
        nodes=[Node("node-1", ("10.0.3.4",), ("10.244.1.0/24",)), Node("node-2", ("10.0.9.9",), ("10.244.2.0/24",)),
               Node("node-3", ("10.0.7.7",), ("10.244.3.0/24",))])
    evaluator = Evaluator(cluster, [policy])
    dst = cluster.endpoint(store_pod.ips[0])
    node = cluster.endpoint("10.0.3.4")  # the collector's connections carry its node's address
    assert node.kind is EndpointKind.NODE
    assert evaluator.judge(node, dst, STORE_PORT, "TCP").allowed
    assert evaluator.judge(cluster.endpoint("10.0.7.7"), dst, STORE_PORT, "TCP").allowed  # any node in the CIDR
    denied = [
        (node, 9090, "TCP"), (node, 22, "TCP"), (node, STORE_PORT, "UDP"),
        (cluster.endpoint(other_pod.ips[0]), STORE_PORT, "TCP"),  # pods, even in the same cluster
        (Endpoint("203.0.113.9", EndpointKind.EXTERNAL), STORE_PORT, "TCP"),
        (cluster.endpoint("192.0.2.1"), STORE_PORT, "TCP"),  # the base's placeholder was replaced
    ]
    for src, port, protocol in denied:
        assert not evaluator.judge(src, dst, port, protocol).allowed, (src.ip, port, protocol)
    assert policy.policy_types == frozenset({"Ingress"})


@pytest.mark.parametrize(("kind", "name"), [("DaemonSet", "netpol-gen-collector"), ("Deployment", "netpol-gen-store")])
def test_container_args_are_accepted_by_the_real_command_line(
    objects: list[dict[str, Any]], kind: str, name: str
) -> None:
    """The manifests run `netpol-gen <command> <flags>`: every flag must exist on that command, or the pod
    would crash-loop on its first start."""
    container = _one(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]
    command, *flags = container["args"]
    subcommand = cli.get_command(click.Context(cli), command)
    assert subcommand is not None, f"no command {command!r}"
    with subcommand.make_context(command, list(flags), resilient_parsing=False) as ctx:
        assert ctx.params  # parsed: unknown flags or bad values raise a click error above


def _mounted(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path`` in ``container``, from its Secret volume mounts."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            secret = volumes[mount["name"]]["secret"]
            (key,) = [item["key"] for item in secret["items"] if item["path"] == path[len(prefix):]]
            return secret["secretName"], key
    raise AssertionError(f"nothing mounted at {path}")


def _flag(args: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    return value


def test_the_store_service_speaks_tls_with_the_certificate_from_a_secret(objects: list[dict[str, Any]]) -> None:
    """Bearer tokens cross the node network: the store serves HTTPS with the Secret's certificate and key,
    its probes use HTTPS, and every collector verifies it against the Secret's ca.crt, never seeing the key."""
    store = _one(objects, "Deployment", "netpol-gen-store")["spec"]["template"]["spec"]
    (serve,) = store["containers"]
    assert _mounted(store, serve, _flag(serve["args"], "--tls-cert")) == ("netpol-gen-store-tls", "tls.crt")
    assert _mounted(store, serve, _flag(serve["args"], "--tls-key")) == ("netpol-gen-store-tls", "tls.key")
    assert serve["readinessProbe"]["httpGet"]["scheme"] == serve["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    collector = _one(objects, "DaemonSet", "netpol-gen-collector")["spec"]["template"]["spec"]
    (collect,) = collector["containers"]
    assert _flag(collect["args"], "--server") == f"https://netpol-gen-store.netpol-gen.svc:{STORE_PORT}"
    assert _mounted(collector, collect, _flag(collect["args"], "--ca-file")) == ("netpol-gen-store-tls", "ca.crt")
    keys = {item["key"] for v in collector["volumes"] if "secret" in v for item in v["secret"]["items"]}
    assert keys == {"ca.crt"}
