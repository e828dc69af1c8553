"""Generate a large, realistic, deterministic benchmark input for ``netpol-gen check``.

Writes into one directory:

* ``cluster.yaml`` (or ``.json``): a ``kind: List`` as ``kubectl get namespaces,pods,services,
  endpointslices,nodes -A -o yaml`` writes it - Namespaces with labels, Nodes with podCIDRs,
  Deployment pods (ReplicaSet owner refs, ``pod-template-hash``), StatefulSet pods, DaemonSet pods on
  every node (some host-network), a few terminating pods whose IP was reused by a newer pod,
  Services with ClusterIPs and named targetPorts, and EndpointSlices;
* ``policies/<namespace>.yaml``: per-app ingress policies (podSelector / namespaceSelector peers,
  named and numbered ports, matchExpressions), egress policies with ipBlocks and ``except``,
  default-deny policies for some namespaces;
* ``flows.jsonl``: flows between pods directly and via Service ClusterIPs, DNS, Prometheus scrapes,
  kubelet probes from nodes, traffic to and from external IPs, and a few percent of connections no
  policy admits.

Everything derives from one ``random.Random(seed)``, so the same arguments give byte-identical files.
Output is written with plain string formatting: the point is to produce millions of flows in seconds,
not to exercise a YAML library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

T0 = 1_760_000_000  # flows start here (epoch seconds); every pod but the churned ones predates it
WINDOW = 3600.0  # flows span one hour
CHURN_AT = T0 + WINDOW / 2  # terminating pods lose their IP here; their successors start just after
NODE_CIDR = "10.0.0.0/24"
EXTERNAL_IPS = ("142.250.74.46", "151.101.1.69", "52.95.110.1", "104.16.132.229", "140.82.121.4")
CLIENT_IPS = ("203.0.113.7", "198.51.100.23", "192.0.2.55", "81.2.69.142", "89.160.20.112")



@dataclass(frozen=True)
class Shape:
    """The dimensions that change what ``check``, ``import`` and ``export`` cost, beyond the sizes.

    The defaults are the original generator's (same seed, same bytes); ``PRESETS`` name other shapes.
    Each knob is a command-line option of the same name (``--backends``, ``--overlap``, ...)."""

    backends: int = 0  # replicas of every Deployment (0: 2 to 8 at random); more backends, fewer Services
    overlap: int = 0  # extra policies per namespace selecting whole tiers, their rules matching nothing
    overlap_peers: int = 6  # peers per rule of those policies (what a linear rule scan pays for)
    egress_share: float = 0.35  # share of applications with an egress policy (ipBlock with except)
    ipblocks: int = 0  # extra ipBlock ingress rules per application policy (distinct client ranges)
    external_ips: int = 0  # distinct internet addresses talking to and from the cluster (0: five each way)
    service_share: float = 1.0  # share of app-to-app flows sent to the ClusterIP (the rest to a pod IP)
    ipv6: float = 0.0  # share of pod-to-pod and internet flows over IPv6 (pods and Services get dual-stack)
    churn: float = 0.08  # share of Deployments with a pod replaced mid-window (its IP reused)
    restarts: int = 1  # distinct instants at which those replacements happen, spread over the window


PRESETS = {
    # issue #15: ~3,000 pods, ~1,000 policies, 1.0M flows; Services with several backends, many
    # overlapping policies per namespace, ipBlocks on every isolated pod, far more distinct connections
    "issue15": Shape(backends=5, overlap=4, egress_share=0.5, ipblocks=2, external_ips=20_000, service_share=0.8,
                     ipv6=0.1, churn=0.3, restarts=40),
}

_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "payments checkout cart catalog search orders billing invoices shipping inventory users auth "
    "profiles reviews ratings recommend ads analytics reporting notify email sms chat media images "
    "video upload storage ledger fraud risk pricing promo loyalty gift wishlist returns support "
    "tickets crm partners vendors supply warehouse fleet routing geo maps tax audit compliance"
).split()
_ROLES = ("web", "api", "worker", "gateway", "grpc", "cron", "sync", "indexer", "router", "svc", "admin", "events",
          "consumer", "scheduler")
_TEAMS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_YAML_WORDS = frozenset(("true", "false", "yes", "no", "on", "off", "null", "y", "n"))


# --- YAML written by hand (kubectl layout: list items at their key's indentation) -----------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_lines(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                _yaml_lines(item, indent + 2 if isinstance(item, dict) else indent, out)
            elif isinstance(item, dict | list):
                out.append(f"{pad}{key}: {'{}' if isinstance(item, dict) else '[]'}")
            else:
                out.append(f"{pad}{key}: {_scalar(item)}")
        return
    for item in value:
        if isinstance(item, dict) and item:
            start = len(out)
            _yaml_lines(item, indent + 2, out)
            out[start] = f"{pad}- {out[start][indent + 2:]}"
        else:
            out.append(f"{pad}- {_scalar(item)}")


def to_yaml(value: Any) -> str:
    out: list[str] = []
    _yaml_lines(value, 0, out)
    return "\n".join(out) + "\n"


# --- the cluster model ----------------------------------------------------------------------------


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class PodInfo:
    name: str
    ip: str
    node: int
    uid: str
    created: float
    ended: float | None = None
    ip6: str | None = None  # dual-stack (Shape.ipv6)

    @property
    def ips(self) -> list[str]:
        return [self.ip] if self.ip6 is None else [self.ip, self.ip6]


@dataclass(eq=False)  # identity: apps reference each other through callers/deps
class App:
    """A workload and its Service. ``port_name``/``port`` is the serving container port."""

    namespace: str
    name: str
    kind: str  # Deployment, StatefulSet, DaemonSet
    tier: str
    team: str
    port_name: str
    port: int
    protocol: str = "TCP"
    service_port: int = 80
    metrics: bool = True
    host_network: bool = False
    extra_labels: dict[str, str] = field(default_factory=dict)
    pods: list[PodInfo] = field(default_factory=list)
    cluster_ip: str | None = None
    cluster_ip6: str | None = None
    callers: list[App] = field(default_factory=list)  # who may call it (becomes its ingress policy)
    deps: list[App] = field(default_factory=list)  # what it calls
    egress_policy: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "tier": self.tier, "team": self.team, **self.extra_labels}

    def live_pods(self, ts: float) -> list[PodInfo]:
        return [p for p in self.pods if p.created <= ts and (p.ended is None or ts < p.ended)]


class Cluster:
    """Builds namespaces, nodes, apps and pods, allocating IPs from per-node pod CIDRs."""

    def __init__(self, rng: random.Random, namespaces: int, pods: int, nodes: int, shape: Shape | None = None) -> None:
        self.rng = rng
        self.shape = shape = shape or Shape()
        self.dual_stack = shape.ipv6 > 0
        # the instants pods are replaced at: the middle of the window, or spread over it
        self.restart_times = [CHURN_AT] if shape.restarts <= 1 else [
            T0 + WINDOW * (k + 1) / (shape.restarts + 1) for k in range(shape.restarts)]
        self.node_count = nodes
        self.next_host = [2] * nodes
        self.next_service = 10
        self.namespaces: dict[str, dict[str, str]] = {}
        self.apps: list[App] = []
        self.churned: list[PodInfo] = []
        self._system()
        self._workloads(namespaces, pods)
        self._wire()

    # - allocation -

    def _pod_ip(self, node: int) -> str:
        host = self.next_host[node]
        self.next_host[node] += 1
        return f"10.{244 + node // 256}.{node % 256}.{host}"

    def pod_cidr(self, node: int) -> str:
        return f"10.{244 + node // 256}.{node % 256}.0/24"

    def pod_cidrs(self, node: int) -> list[str]:
        return [self.pod_cidr(node)] + ([f"fd00:244:{node:x}::/64"] if self.dual_stack else [])

    def node_ip(self, node: int) -> str:
        return f"10.0.0.{10 + node}"

    def _service_ip(self) -> str:
        n = self.next_service
        self.next_service += 1
        return f"10.96.{n // 256}.{n % 256}"

    def _pod_ip6(self, node: int, ip: str) -> str | None:
        """The pod's IPv6 address next to its IPv4 one (same host number), when dual-stack."""
        return f"fd00:244:{node:x}::{int(ip.rsplit('.', 1)[1]):x}" if self.dual_stack else None

    def _uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _add(self, app: App, replicas: int) -> App:
        rng = self.rng
        if app.kind == "DaemonSet":
            nodes = list(range(self.node_count))
        else:
            nodes = [rng.randrange(self.node_count) for _ in range(replicas)]
        template_hash = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(10))
        if app.kind == "Deployment":
            app.extra_labels["pod-template-hash"] = template_hash
        for i, node in enumerate(nodes):
            if app.kind == "StatefulSet":
                name = f"{app.name}-{i}"
            elif app.kind == "DaemonSet":
                name = f"{app.name}-{''.join(rng.choice('bcdfghjklmnpqrstvwxz2456789') for _ in range(5))}"
            else:
                suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                name = f"{app.name}-{template_hash}-{suffix}"
            ip = self.node_ip(node) if app.host_network else self._pod_ip(node)
            created = T0 - rng.uniform(3600, 30 * 86400)
            ip6 = None if app.host_network else self._pod_ip6(node, ip)
            app.pods.append(PodInfo(name, ip, node, self._uid(), created, ip6=ip6))
        if app.kind == "Deployment" and rng.random() < self.shape.churn and app.pods:
            # a rollout mid-window: the old pod terminates and a new one gets its IP right after
            old = app.pods[0]
            at = self.restart_times[0] if len(self.restart_times) == 1 else rng.choice(self.restart_times)
            old.ended = at
            suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            app.pods.append(
                PodInfo(f"{app.name}-{template_hash}-{suffix}", old.ip, old.node, self._uid(), at + 5, ip6=old.ip6)
            )
            self.churned.append(old)
        if app.service_port:
            app.cluster_ip = self._service_ip()
            if self.dual_stack:
                n = self.next_service - 1
                app.cluster_ip6 = f"fd00:96::{n:x}"
        self.apps.append(app)
        return app

    # - layout -

    def _system(self) -> None:
        for name, labels in (
            ("kube-system", {}),
            ("monitoring", {"purpose": "observability"}),
            ("logging", {"purpose": "observability"}),
            ("ingress-nginx", {"purpose": "edge"}),
        ):
            self.namespaces[name] = {"kubernetes.io/metadata.name": name, **labels}
        self.dns = self._add(
            App("kube-system", "coredns", "Deployment", "platform", "platform", "dns", 53, "UDP", 53,
                metrics=False, extra_labels={"k8s-app": "kube-dns"}),
            2,
        )
        self._add(App("kube-system", "kube-proxy", "DaemonSet", "platform", "platform", "metrics", 10249,
                      service_port=0, metrics=False, host_network=True), 0)
        self.prometheus = self._add(
            App("monitoring", "prometheus", "StatefulSet", "platform", "platform", "web", 9090, service_port=9090,
                metrics=False), 2)
        self.node_exporter = self._add(
            App("monitoring", "node-exporter", "DaemonSet", "platform", "platform", "metrics", 9100,
                service_port=0, metrics=False), 0)
        self._add(App("logging", "fluent-bit", "DaemonSet", "platform", "platform", "http", 2020,
                      service_port=0, metrics=False), 0)
        self.ingress = self._add(
            App("ingress-nginx", "ingress-nginx-controller", "Deployment", "edge", "platform", "https", 443,
                service_port=443, metrics=False), 3)

    def _workloads(self, namespaces: int, pods: int) -> None:
        rng = self.rng
        app_namespaces = max(1, namespaces - len(self.namespaces))
        system_pods = sum(len(a.pods) for a in self.apps)
        per_ns = max(1.0, (pods - system_pods) / app_namespaces)
        for n in range(app_namespaces):
            ns = _WORDS[n % len(_WORDS)] + ("" if n < len(_WORDS) else f"-{n // len(_WORDS)}")
            team = _TEAMS[n % len(_TEAMS)]
            env = "prod" if n % 3 else "staging"
            self.namespaces[ns] = {"kubernetes.io/metadata.name": ns, "team": team, "env": env}
            budget = per_ns
            roles = list(_ROLES[1:])
            rng.shuffle(roles)
            roles.insert(0, _ROLES[0])  # every namespace serves something to the ingress controller
            if self.shape.backends:  # few replicas each: more applications fill the namespace
                roles += [f"{role}{k}" for k in range(2, 2 + int(per_ns)) for role in _ROLES]
            for role in roles:
                if budget <= 0:
                    break
                tier = "frontend" if role in ("web", "gateway") else "backend"
                port_name, port = ("grpc", 9000) if role == "grpc" else ("http", 8080)
                replicas = self.shape.backends or rng.choice((2, 3, 3, 4, 4, 5, 6, 8))
                self._add(App(ns, f"{ns}-{role}", "Deployment", tier, team, port_name, port,
                              service_port=0 if role in ("worker", "cron") else 80), replicas)
                budget -= replicas
            for store, port_name, port in (("postgres", "postgres", 5432), ("redis", "redis", 6379)):
                if budget > 0:
                    self._add(App(ns, f"{ns}-{store}", "StatefulSet", "data", team, port_name, port,
                                  service_port=port), 3)
                    budget -= 3

    def _wire(self) -> None:
        """Give every app dependencies; the callers of an app are what its ingress policy admits."""
        rng = self.rng
        by_ns: dict[str, list[App]] = {}
        for app in self.apps:
            by_ns.setdefault(app.namespace, []).append(app)
        shared = [a for a in self.apps if a.service_port and a.tier in ("frontend", "backend")]
        for app in self.apps:
            if app.tier in ("platform", "edge", "data"):  # data stores call nothing
                continue
            local = [a for a in by_ns[app.namespace] if a.service_port and a is not app]
            if app.tier == "frontend":
                self.ingress.deps.append(app)
            wanted = rng.sample(local, min(len(local), rng.randint(1, 3)))
            wanted += rng.sample(shared, 1) if rng.random() < 0.5 else []
            for dep in wanted:
                if dep is not app and dep not in app.deps:
                    app.deps.append(dep)
                    dep.callers.append(app)
            app.egress_policy = rng.random() < self.shape.egress_share
        for app in self.ingress.deps:
            app.callers.append(self.ingress)


# --- Kubernetes objects ---------------------------------------------------------------------------


def _stable_uid(*parts: str) -> str:
    """A uid derived from the object's identity (``hash()`` of a str differs between runs)."""
    return f"00000000-0000-4000-8000-{zlib.crc32('/'.join(parts).encode()):012d}"


def _owner(app: App) -> dict[str, Any]:
    if app.kind == "Deployment":
        kind, name = "ReplicaSet", f"{app.name}-{app.extra_labels['pod-template-hash']}"
    else:
        kind, name = app.kind, app.name
    return {"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True, "kind": kind,
            "name": name, "uid": _stable_uid(app.namespace, kind, name)}


def _pod_object(cluster: Cluster, app: App, pod: PodInfo) -> dict[str, Any]:
    ports = [{"containerPort": app.port, "name": app.port_name, "protocol": app.protocol}]
    if app.metrics:
        ports.append({"containerPort": 9090, "name": "metrics", "protocol": "TCP"})
    meta: dict[str, Any] = {
        "creationTimestamp": _stamp(pod.created),
        "generateName": pod.name.rsplit("-", 1)[0] + "-",
        "labels": app.labels,
        "name": pod.name,
        "namespace": app.namespace,
        "ownerReferences": [_owner(app)],
        "resourceVersion": str(100000 + int(pod.created) % 900000),
        "uid": pod.uid,
    }
    if pod.ended is not None:
        meta["deletionGracePeriodSeconds"] = 30
        meta["deletionTimestamp"] = _stamp(pod.ended)
    spec: dict[str, Any] = {
        "containers": [{
            "image": f"registry.example.com/{app.team}/{app.name}:1.{len(app.name) % 9}.0",
            "imagePullPolicy": "IfNotPresent",
            "name": app.name.rsplit("-", 1)[-1],
            "ports": ports,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }],
        "dnsPolicy": "ClusterFirst",
        "nodeName": f"node-{pod.node:02d}",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
    }
    if app.host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "hostIP": cluster.node_ip(pod.node),
            "phase": "Running",
            "podIP": pod.ip,
            "podIPs": [{"ip": ip} for ip in pod.ips],
            "qosClass": "Burstable",
            "startTime": _stamp(pod.created + 2),
        },
    }


def _service_ports(app: App) -> list[dict[str, Any]]:
    # Named targetPorts: the Service says "http" and each pod resolves it to its container port.
    ports = [{"name": app.port_name, "port": app.service_port, "protocol": app.protocol,
              "targetPort": app.port_name}]
    if app.metrics:
        ports.append({"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090})
    if app.name == "coredns":
        ports.append({"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53})
    return ports


def _service_objects(app: App) -> Iterator[dict[str, Any]]:
    assert app.cluster_ip is not None
    name = "kube-dns" if app.name == "coredns" else app.name
    selector = {"k8s-app": "kube-dns"} if app.name == "coredns" else {"app.kubernetes.io/name": app.name}
    ports = _service_ports(app)
    yield {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"labels": {"app.kubernetes.io/name": app.name}, "name": name, "namespace": app.namespace,
                     "uid": _stable_uid(app.namespace, "Service", name)},
        "spec": {"clusterIP": app.cluster_ip,
                 "clusterIPs": [app.cluster_ip, *([app.cluster_ip6] if app.cluster_ip6 else [])],
                 "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4", *(["IPv6"] if app.cluster_ip6 else [])],
                 "ports": ports, "selector": selector, "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    }
    live = app.live_pods(T0 + WINDOW)
    yield {
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": [
            {"addresses": [p.ip], "conditions": {"ready": True, "serving": True, "terminating": False},
             "nodeName": f"node-{p.node:02d}",
             "targetRef": {"kind": "Pod", "name": p.name, "namespace": app.namespace, "uid": p.uid}}
            for p in live
        ],
        "kind": "EndpointSlice",
        "metadata": {"generateName": f"{name}-", "labels": {"kubernetes.io/service-name": name},
                     "name": f"{name}-{live[0].uid[:5]}", "namespace": app.namespace},
        "ports": [{"name": p["name"], "port": app.port if p["targetPort"] == app.port_name else p["targetPort"],
                   "protocol": p["protocol"]} for p in ports],
    }


def cluster_objects(cluster: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for ns, labels in cluster.namespaces.items():
        items.append({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"creationTimestamp": _stamp(T0 - 90 * 86400), "labels": labels, "name": ns},
                      "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    for app in cluster.apps:
        for pod in app.pods:
            items.append(_pod_object(cluster, app, pod))
    for app in cluster.apps:
        if app.cluster_ip:
            items.extend(_service_objects(app))
    for n in range(cluster.node_count):
        name = f"node-{n:02d}"
        items.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "topology.kubernetes.io/zone": f"zone-{'abc'[n % 3]}"}, "name": name},
            "spec": {"podCIDR": cluster.pod_cidr(n), "podCIDRs": cluster.pod_cidrs(n)},
            "status": {"addresses": [{"address": cluster.node_ip(n), "type": "InternalIP"},
                                     {"address": name, "type": "Hostname"}]},
        })
    return items


# --- NetworkPolicies ------------------------------------------------------------------------------


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _peer(caller: App, namespace: str) -> dict[str, Any]:
    pods = {"matchLabels": {"app.kubernetes.io/name": caller.name}}
    if caller.namespace == namespace:
        return {"podSelector": pods}
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": caller.namespace}},
            "podSelector": pods}


def _ingress_policy(app: App, shape: Shape) -> dict[str, Any]:
    same = sorted(c.name for c in app.callers if c.namespace == app.namespace)
    peers = [_peer(c, app.namespace) for c in app.callers if c.namespace != app.namespace]
    if same:  # several local callers: one matchExpressions In instead of a peer each
        peers.insert(0, {"podSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": same}]}})
    if app.kind == "StatefulSet":
        peers.append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": app.name}}})
    ingress: list[dict[str, Any]] = []
    if peers:
        ingress.append({"from": peers, "ports": [{"port": app.port_name, "protocol": "TCP"}]})
    ingress.append({  # kubelet probes come from the node addresses
        "from": [{"ipBlock": {"cidr": NODE_CIDR}}], "ports": [{"port": app.port, "protocol": "TCP"}]})
    if app.metrics:
        ingress.append({
            "from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "purpose", "operator": "In", "values": ["observability"]}]},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
            "ports": [{"port": 9090, "protocol": "TCP"}]})
    for k in range(shape.ipblocks):  # partner ranges (CGNAT space: no generated client is in them)
        ingress.append({"from": [{"ipBlock": {"cidr": f"100.{64 + k}.0.0/16", "except": [f"100.{64 + k}.0.0/24"]}}],
                        "ports": [{"port": app.port, "protocol": "TCP"}]})
    return _policy(app.namespace, f"{app.name}-ingress", {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": app.name}},
        "policyTypes": ["Ingress"], "ingress": ingress})


def _egress_policy(app: App, dns: App, ipv6: bool) -> dict[str, Any]:
    egress: list[dict[str, Any]] = [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": dns.port, "protocol": "UDP"}, {"port": dns.port, "protocol": "TCP"}]}]
    for dep in app.deps:
        egress.append({"to": [_peer(dep, app.namespace)], "ports": [{"port": dep.port_name, "protocol": "TCP"}]})
    egress.append({
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
        "ports": [{"port": 443, "protocol": "TCP"}]})
    if ipv6:
        egress[-1]["to"].append({"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}})
    return _policy(app.namespace, f"{app.name}-egress", {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": app.name}},
        "policyTypes": ["Egress"], "egress": egress})


def policy_objects(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Policies per namespace. Every application gets an ingress policy (so it is isolated and a
    caller it does not list is denied); about a third also get an egress policy."""
    by_ns: dict[str, list[dict[str, Any]]] = {}
    rng = cluster.rng
    for ns in cluster.namespaces:
        if ns in ("kube-system", "monitoring", "logging", "ingress-nginx"):
            continue
        if rng.random() < 0.6:
            by_ns.setdefault(ns, []).append(_policy(ns, "default-deny-ingress", {
                "podSelector": {}, "policyTypes": ["Ingress"]}))
    for app in cluster.apps:
        if app.tier in ("platform", "edge"):
            continue
        policies = by_ns.setdefault(app.namespace, [])
        policies.append(_ingress_policy(app, cluster.shape))
        if app.egress_policy:
            policies.append(_egress_policy(app, cluster.dns, cluster.dual_stack))
        if app.tier == "data":  # caches and databases never call out except DNS
            policies.append(_policy(app.namespace, f"{app.name}-no-egress", {
                "podSelector": {"matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "In", "values": [app.name]},
                    {"key": "tier", "operator": "NotIn", "values": ["frontend"]}]},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": app.name}}}]},
                           {"ports": [{"port": 53, "protocol": "UDP"}]}]}))
    for ns, policies in by_ns.items():
        policies.extend(_overlapping_policies(ns, cluster.shape))
    return by_ns


def _overlapping_policies(namespace: str, shape: Shape) -> Iterator[dict[str, Any]]:
    """``shape.overlap`` policies selecting a whole tier or team (so a pod is selected by several), with
    rules of many peers that no generated traffic matches: they leave every verdict as it was and
    make every rule scan longer, as the hand-written policy sets of large clusters do."""
    selectors = ({"matchLabels": {"tier": "backend"}}, {"matchLabels": {"tier": "frontend"}},
                 {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend", "data"]}]}, {})
    for k in range(shape.overlap):
        peers = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": f"{namespace}-legacy-{k}-{j}"}}}
                 for j in range(shape.overlap_peers)]
        peers.append({"namespaceSelector": {"matchLabels": {"team": f"retired-{k}"}}})
        direction = "Egress" if k % 2 else "Ingress"
        rules = [{("to" if k % 2 else "from"): peers, "ports": [{"port": 7000 + k, "protocol": "TCP"}]}]
        if k % 2:  # an egress policy must keep DNS open for the pods it isolates
            rules.append({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
            rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
            rules.append({"to": [{"ipBlock": {"cidr": "::/0"}}]})
            rules.append({"to": [{"namespaceSelector": {}}]})
        yield _policy(namespace, f"shared-{k}", {"podSelector": selectors[k % len(selectors)],
                                                 "policyTypes": [direction], direction.lower(): rules})


# --- flows ----------------------------------------------------------------------------------------


def flow_lines(cluster: Cluster, count: int) -> Iterator[str]:
    """Flows in time order. Most follow the app graph (allowed); ~3% are connections no rule lists:
    mostly a few hundred misconfigured callers retrying the same Service (as denied traffic in a real
    cluster does), and a tenth of them random pod-to-Service probes that never repeat."""
    rng = cluster.rng
    apps = [a for a in cluster.apps if a.tier not in ("platform", "edge")]
    callers = [a for a in apps if a.deps]
    talkers = [a for a in apps if a.tier != "data"]  # data stores resolve and reach nothing outside
    servers = [a for a in apps if a.service_port]
    misconfigured = [(app, rng.choice(servers)) for app in rng.choices(apps, k=300)]
    scraped = [a for a in apps if a.metrics]
    nodes = [cluster.node_ip(n) for n in range(cluster.node_count)]
    dns = cluster.dns
    shape = cluster.shape
    servers_out, clients_in = _internet(shape.external_ips)
    random_ = rng.random
    choice = rng.choice
    randrange = rng.randrange
    step = WINDOW / max(count, 1)
    for i in range(count):
        ts = T0 + i * step
        r = random_()
        proto = "TCP"
        if r < 0.55:  # app -> dependency, through its Service (or, past service_share, a backend directly)
            app = choice(callers)
            dep = choice(app.deps)
            src_pod = choice(app.live_pods(ts))
            src, dst, port = src_pod.ip, dep.cluster_ip, dep.service_port
            if shape.service_share < 1.0 and random_() >= shape.service_share:
                dst_pod = choice(dep.live_pods(ts))
                src, dst, port = src_pod.ip, dst_pod.ip, dep.port
                if shape.ipv6 and random_() < shape.ipv6:
                    src, dst = src_pod.ip6 or src, dst_pod.ip6 or dst
        elif r < 0.67:  # DNS through the kube-dns ClusterIP
            src, dst, port = choice(choice(talkers).live_pods(ts)).ip, dns.cluster_ip, 53
            proto = "UDP" if random_() < 0.9 else "TCP"
        elif r < 0.74:  # ingress controller -> frontend Service
            app = choice(cluster.ingress.deps)
            src, dst, port = choice(cluster.ingress.pods).ip, app.cluster_ip, app.service_port
        elif r < 0.81:  # Prometheus scrapes pod IPs directly on the metrics port
            src_pod, dst_pod = choice(cluster.prometheus.pods), choice(choice(scraped).live_pods(ts))
            src, dst, port = src_pod.ip, dst_pod.ip, 9090
            if shape.ipv6 and random_() < shape.ipv6:
                src, dst = src_pod.ip6 or src, dst_pod.ip6 or dst
        elif r < 0.85:  # kubelet probes from the node address
            app = choice(apps)
            pod = choice(app.live_pods(ts))
            src, dst, port = cluster.node_ip(pod.node), pod.ip, app.port
        elif r < 0.90:  # to the internet on 443
            src_pod = choice(choice(talkers).live_pods(ts))
            src, dst, port = src_pod.ip, choice(servers_out), 443
            if shape.ipv6 and random_() < shape.ipv6 and src_pod.ip6:
                src, dst = src_pod.ip6, _ipv6_internet(dst)
        elif r < 0.93:  # clients on the internet -> ingress controller
            src, dst, port = choice(clients_in), choice(cluster.ingress.pods).ip, 443
        elif r < 0.97:  # node-exporter and other host traffic
            src, dst, port = choice(nodes), choice(cluster.node_exporter.pods).ip, 9100
        else:  # unlisted: a pod calls a Service it has no rule for
            app, dep = choice(misconfigured) if random_() < 0.9 else (choice(apps), choice(servers))
            src, dst, port = choice(app.live_pods(ts)).ip, dep.cluster_ip, dep.service_port
        sport = randrange(32768, 61000)
        packets = randrange(2, 400)
        yield (f'{{"src_ip":"{src}","src_port":{sport},"dst_ip":"{dst}","dst_port":{port},'
               f'"protocol":"{proto}","ts":{ts:.3f},"packets":{packets},"bytes":{packets * randrange(60, 1400)}}}\n')


def _internet(count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Internet servers the pods call and clients calling in: the five of each of the original
    generator, or ``count`` of each (public space outside every range the policies name)."""
    if not count:
        return EXTERNAL_IPS, CLIENT_IPS
    def address(i: int, last: int) -> str:
        return f"{20 + (i >> 16) % 60}.{(i >> 8) & 255}.{i & 255}.{last}"
    return tuple(address(i, 9) for i in range(count)), tuple(address(i, 17) for i in range(count))


def _ipv6_internet(ipv4: str) -> str:
    a, b, c, d = (int(part) for part in ipv4.split("."))
    return f"2001:db8:{a:x}{b:02x}:{c:x}{d:02x}::1"


# --- entry point ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    pods: int
    services: int
    namespaces: int
    nodes: int
    policies: int
    flows: int
    cluster_bytes: int
    policy_bytes: int
    flow_bytes: int


def generate(out: Path, *, seed: int = 1, namespaces: int = 50, pods: int = 3000, nodes: int = 20,
             flows: int = 1_000_000, fmt: str = "yaml", shape: Shape | None = None) -> Sizes:
    """Write ``cluster.<fmt>``, ``policies/`` and ``flows.jsonl`` under ``out``; return their sizes."""
    rng = random.Random(seed)
    cluster = Cluster(rng, namespaces, pods, nodes, shape)
    out.mkdir(parents=True, exist_ok=True)
    items = cluster_objects(cluster)
    snapshot = {"apiVersion": "v1", "items": items, "kind": "List",
                "metadata": {"resourceVersion": ""}}
    cluster_path = out / f"cluster.{fmt}"
    cluster_path.write_text(to_yaml(snapshot) if fmt == "yaml" else json.dumps(snapshot, indent=4) + "\n")
    policy_dir = out / "policies"
    policy_dir.mkdir(exist_ok=True)
    for stale in policy_dir.glob("*.yaml"):
        stale.unlink()
    policy_count = policy_bytes = 0
    for ns, policies in policy_objects(cluster).items():
        text = "---\n".join(to_yaml(p) for p in policies)
        (policy_dir / f"{ns}.yaml").write_text(text)
        policy_count += len(policies)
        policy_bytes += len(text)
    flow_path = out / "flows.jsonl"
    with flow_path.open("w", encoding="utf-8") as fh:
        fh.writelines(flow_lines(cluster, flows))
    return Sizes(
        pods=sum(1 for i in items if i["kind"] == "Pod"),
        services=sum(1 for i in items if i["kind"] == "Service"),
        namespaces=len(cluster.namespaces),
        nodes=nodes,
        policies=policy_count,
        flows=flows,
        cluster_bytes=cluster_path.stat().st_size,
        policy_bytes=policy_bytes,
        flow_bytes=flow_path.stat().st_size,
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that measures a data set: a kept one (--data) or one made for the run."""
    parser.add_argument("--data", type=Path, help="directory from gen_cluster.py (default: generate one)")
    parser.add_argument("--flows", type=int, default=1_000_000, help="flows to generate (without --data)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--preset", choices=tuple(PRESETS), help="generator shape (without --data)")


@contextmanager
def data_dir(data: Path | None, flows: int, seed: int, preset: str | None = None) -> Iterator[Path]:
    """``data`` when given, else a freshly generated data set in a temporary directory, deleted after:
    the benchmarks either measure data a user kept or make their own."""
    if data is not None:
        yield data
        return
    tmp = Path(tempfile.mkdtemp(prefix="netpol-bench-"))
    try:
        main([str(tmp), "--flows", str(flows), "--seed", str(seed), *(["--preset", preset] if preset else [])])
        yield tmp
    finally:
        shutil.rmtree(tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml", help="snapshot format")
    parser.add_argument("--preset", choices=tuple(PRESETS), help="a named Shape; the knobs below override it")
    for knob in fields(Shape):
        parser.add_argument(f"--{knob.name.replace('_', '-')}", dest=knob.name, type=type(knob.default), default=None)
    args = parser.parse_args(argv)
    shape = PRESETS[args.preset] if args.preset else Shape()
    shape = dataclasses.replace(shape, **{k.name: getattr(args, k.name) for k in fields(Shape)
                                           if getattr(args, k.name) is not None})
    start = time.perf_counter()
    sizes = generate(args.out, seed=args.seed, namespaces=args.namespaces, pods=args.pods, nodes=args.nodes,
                     flows=args.flows, fmt=args.format, shape=shape)
    elapsed = time.perf_counter() - start
    print(
        f"{args.out}: {sizes.namespaces} namespaces, {sizes.nodes} nodes, {sizes.pods} pods, "
        f"{sizes.services} services; {sizes.policies} policies; {sizes.flows} flows\n"
        f"  cluster {sizes.cluster_bytes / 1e6:.1f} MB, policies {sizes.policy_bytes / 1e6:.1f} MB, "
        f"flows {sizes.flow_bytes / 1e6:.1f} MB; written in {elapsed:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
