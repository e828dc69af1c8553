"""Generate the bundled ticket-booking example: a cluster snapshot in the shape ``kubectl get
namespaces,pods,services,endpointslices,nodes -A -o yaml`` writes, and the connections its workloads
make, as JSONL flows. Deterministic: the files in examples/ticket-booking/ are its output.

The app: an ingress controller in front of a web front end, catalogue, booking, payments (calls an
external payment API), auth (signs users in through Facebook and Google), a PostgreSQL StatefulSet,
a Redis cache, a nightly report CronJob, CoreDNS, Prometheus scraping every pod's metrics port,
and kubelet probes from the nodes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

CREATED = "2026-11-20T08:00:00Z"
START_TS = datetime(2026, 11, 22, tzinfo=UTC).timestamp()  # after every pod was created

NODES = {"node-1": ("10.0.0.11", "10.244.1.0/24"), "node-2": ("10.0.0.12", "10.244.2.0/24")}

# DNS names of the external services, and the addresses they resolved to
EXTERNAL = {
    "graph.facebook.com": "157.240.221.16",
    "oauth2.googleapis.com": "142.250.74.42",
    "api.payments.example": "203.0.113.40",
}


@dataclass
class App:
    namespace: str
    name: str
    kind: str  # Deployment, StatefulSet, CronJob
    labels: dict[str, str]
    ports: list[tuple[str, int, str]]  # (name, number, protocol)
    replicas: int = 1
    service_ip: str | None = None
    service_ports: list[tuple[str, int, str]] = field(default_factory=list)  # (name, port, targetPort name)
    pods: list[dict[str, Any]] = field(default_factory=list)


def _uid(*parts: str) -> str:
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


APPS = [
    App("ingress-nginx", "ingress-nginx-controller", "Deployment",
        {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
        [("http", 80, "TCP"), ("https", 443, "TCP"), ("metrics", 10254, "TCP")]),
    App("kube-system", "coredns", "Deployment", {"k8s-app": "kube-dns"},
        [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")], replicas=2,
        service_ip="10.96.0.10", service_ports=[("dns", 53, "dns"), ("dns-tcp", 53, "dns-tcp")]),
    App("monitoring", "prometheus", "StatefulSet", {"app.kubernetes.io/name": "prometheus"},
        [("web", 9090, "TCP")]),
    App("booking", "web", "Deployment", {"app.kubernetes.io/name": "web", "tier": "frontend"},
        [("http", 8080, "TCP"), ("metrics", 9100, "TCP")], replicas=2,
        service_ip="10.96.10.10", service_ports=[("http", 80, "http")]),
    App("booking", "catalogue", "Deployment", {"app.kubernetes.io/name": "catalogue", "tier": "backend"},
        [("http", 8080, "TCP"), ("metrics", 9100, "TCP")], replicas=2,
        service_ip="10.96.10.11", service_ports=[("http", 80, "http")]),
    App("booking", "booking", "Deployment", {"app.kubernetes.io/name": "booking", "tier": "backend"},
        [("http", 8080, "TCP"), ("metrics", 9100, "TCP")], replicas=2,
        service_ip="10.96.10.12", service_ports=[("http", 80, "http")]),
    App("booking", "payments", "Deployment", {"app.kubernetes.io/name": "payments", "tier": "backend"},
        [("http", 8443, "TCP"), ("metrics", 9100, "TCP")],
        service_ip="10.96.10.13", service_ports=[("https", 443, "http")]),
    App("booking", "auth", "Deployment", {"app.kubernetes.io/name": "auth", "tier": "backend"},
        [("http", 9000, "TCP"), ("metrics", 9100, "TCP")],
        service_ip="10.96.10.14", service_ports=[("http", 80, "http")]),
    App("booking", "postgres", "StatefulSet", {"app.kubernetes.io/name": "postgres", "tier": "data"},
        [("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")],
        service_ip="10.96.10.20", service_ports=[("postgres", 5432, "postgres")]),
    App("booking", "redis", "Deployment", {"app.kubernetes.io/name": "redis", "tier": "data"},
        [("redis", 6379, "TCP")],
        service_ip="10.96.10.21", service_ports=[("redis", 6379, "redis")]),
    App("booking", "nightly-report", "CronJob", {"app.kubernetes.io/name": "nightly-report"}, []),
]


def _pod(app: App, index: int, ip: str, node: str) -> dict[str, Any]:
    labels = dict(app.labels)
    meta: dict[str, Any] = {"namespace": app.namespace, "creationTimestamp": CREATED}
    status: dict[str, Any] = {"phase": "Running", "hostIP": NODES[node][0], "podIP": ip, "podIPs": [{"ip": ip}]}
    if app.kind == "Deployment":
        template_hash = hashlib.sha1(app.name.encode()).hexdigest()[:10]
        labels["pod-template-hash"] = template_hash
        suffix = hashlib.sha1(f"{app.name}{index}".encode()).hexdigest()[:5]
        name = f"{app.name}-{template_hash}-{suffix}"
        owner = {"kind": "ReplicaSet", "name": f"{app.name}-{template_hash}"}
    elif app.kind == "StatefulSet":
        name = f"{app.name}-{index}"
        labels["statefulset.kubernetes.io/pod-name"] = name
        labels["controller-revision-hash"] = f"{app.name}-7d9f8c6b5"
        owner = {"kind": "StatefulSet", "name": app.name}
    else:  # CronJob: one finished Job pod
        job = f"{app.name}-29399040"
        name = f"{job}-x7k2p"
        labels.update({"job-name": job, "batch.kubernetes.io/job-name": job})
        owner = {"kind": "Job", "name": job}
        status["phase"] = "Succeeded"
        status["containerStatuses"] = [{"name": app.name, "state": {"terminated": {
            "exitCode": 0, "startedAt": "2026-11-22T02:00:00Z", "finishedAt": "2026-11-22T02:04:10Z"}}}]
    meta.update({
        "name": name, "labels": labels, "uid": _uid(app.namespace, name),
        "ownerReferences": [{"apiVersion": "apps/v1" if owner["kind"] != "Job" else "batch/v1",
                             "kind": owner["kind"], "name": owner["name"], "controller": True,
                             "blockOwnerDeletion": True, "uid": _uid(app.namespace, owner["name"])}],
    })
    container: dict[str, Any] = {"name": app.name, "image": f"registry.example/{app.name}:1.4.2"}
    if app.ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in app.ports]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [container]}, "status": status}


def build() -> tuple[list[dict[str, Any]], dict[str, App]]:
    """All snapshot objects, and the apps with their pods (for generating traffic)."""
    objects: list[dict[str, Any]] = []
    for ns, labels in (("booking", {"team": "booking"}), ("kube-system", {}), ("ingress-nginx", {}),
                       ("monitoring", {"team": "platform"})):
        objects.append({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "uid": _uid(ns), "creationTimestamp": CREATED,
                                     "labels": {"kubernetes.io/metadata.name": ns, **labels}},
                        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    for name, (address, cidr) in NODES.items():
        objects.append({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "uid": _uid(name), "creationTimestamp": CREATED,
                                     "labels": {"kubernetes.io/hostname": name}},
                        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                        "status": {"addresses": [{"type": "InternalIP", "address": address},
                                                 {"type": "Hostname", "address": name}]}})
    apps: dict[str, App] = {}
    host = {"node-1": 10, "node-2": 10}
    for app in APPS:
        for index in range(app.replicas):
            node = "node-1" if (index + len(apps)) % 2 == 0 else "node-2"
            host[node] += 1
            ip = NODES[node][1].replace("0/24", str(host[node]))
            app.pods.append(_pod(app, index, ip, node))
        objects.extend(app.pods)
        apps[app.name] = app
        if app.service_ip:
            objects.extend(_service(app))
    return objects, apps


def _service(app: App) -> list[dict[str, Any]]:
    selector = {k: v for k, v in app.labels.items() if k in ("app.kubernetes.io/name", "k8s-app")}
    ports = [{"name": n, "port": p, "targetPort": t,
              "protocol": next(proto for pn, _, proto in app.ports if pn == t)} for n, p, t in app.service_ports]
    service_name = "kube-dns" if app.name == "coredns" else app.name
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": service_name, "namespace": app.namespace,
                            "uid": _uid(app.namespace, "svc", app.name), "creationTimestamp": CREATED},
               "spec": {"type": "ClusterIP", "clusterIP": app.service_ip, "clusterIPs": [app.service_ip],
                        "selector": selector, "ports": ports}}
    slice_ports = [{"name": p["name"], "port": next(n for pn, n, _ in app.ports if pn == p["targetPort"]),
                    "protocol": p["protocol"]} for p in ports]
    endpoints = [{"addresses": [pod["status"]["podIP"]], "conditions": {"ready": True},
                  "nodeName": pod["spec"]["nodeName"],
                  "targetRef": {"kind": "Pod", "namespace": app.namespace, "name": pod["metadata"]["name"],
                                "uid": pod["metadata"]["uid"]}} for pod in app.pods]
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": f"{service_name}-abcde", "namespace": app.namespace,
                        "labels": {"kubernetes.io/service-name": service_name},
                        "uid": _uid(app.namespace, "eps", app.name), "creationTimestamp": CREATED},
           "endpoints": endpoints, "ports": slice_ports}
    return [service, eps]


def flows(apps: dict[str, App]) -> list[dict[str, Any]]:
    """The connections the app makes over a day: through Services, to DNS, to the outside world."""
    records: list[dict[str, Any]] = []
    clock = [START_TS]

    def connect(src: dict[str, Any], dst_ip: str, port: int, proto: str = "TCP", times: int = 3) -> None:
        for i in range(times):
            clock[0] += 7.0
            records.append({"src_ip": src["status"]["podIP"], "src_port": 40000 + len(records) % 20000,
                            "dst_ip": dst_ip, "dst_port": port, "protocol": proto, "ts": clock[0],
                            "packets": 10 + i, "bytes": 1400 + 100 * i})

    def resolve(src: dict[str, Any], *names: str) -> None:
        for name in names or ("kubernetes.default.svc.cluster.local",):
            connect(src, "10.96.0.10", 53, "UDP", times=1)
            records[-1]["_qname"] = name

    ingress = apps["ingress-nginx-controller"].pods[0]
    connect(ingress, "10.96.10.10", 80)
    for web in apps["web"].pods:
        resolve(web)
        connect(web, "10.96.10.11", 80)
        connect(web, "10.96.10.12", 80)
        connect(web, "10.96.10.14", 80)
        connect(web, "10.96.10.21", 6379)
    for pod in apps["catalogue"].pods + apps["booking"].pods:
        resolve(pod)
        connect(pod, "10.96.10.20", 5432)
    for pod in apps["booking"].pods:
        connect(pod, "10.96.10.13", 443)
        connect(pod, "10.96.10.21", 6379)
    payments = apps["payments"].pods[0]
    resolve(payments, "api.payments.example")
    connect(payments, EXTERNAL["api.payments.example"], 443)
    auth = apps["auth"].pods[0]
    resolve(auth, "graph.facebook.com", "oauth2.googleapis.com")
    connect(auth, EXTERNAL["graph.facebook.com"], 443)
    connect(auth, EXTERNAL["oauth2.googleapis.com"], 443)
    connect(auth, "10.96.10.21", 6379)
    prometheus = apps["prometheus"].pods[0]
    for app in apps.values():
        for pod in app.pods:
            metrics = next((p for n, p, _ in app.ports if n == "metrics"), None)
            if metrics and pod["status"]["phase"] == "Running":
                connect(prometheus, pod["status"]["podIP"], metrics, times=1)
    for app in ("web", "catalogue", "booking", "payments", "auth"):
        for pod in apps[app].pods:
            node_ip = NODES[pod["spec"]["nodeName"]][0]
            http = next(p for n, p, _ in apps[app].ports if n == "http")
            records.append({"src_ip": node_ip, "dst_ip": pod["status"]["podIP"], "dst_port": http,
                            "protocol": "TCP", "ts": START_TS + 5.0})
    report = apps["nightly-report"].pods[0]
    clock[0] = START_TS + 2 * 3600 + 10  # while the 02:00 job ran
    connect(report, "10.96.0.10", 53, "UDP", times=1)
    connect(report, "10.96.10.20", 5432, times=1)
    return sorted(records, key=lambda r: r["ts"])


def capture(records: list[dict[str, Any]]) -> list[Any]:
    """The packets a capture on every pod's host-side interface would hold: each TCP connection's
    SYN and SYN-ACK, each UDP request and its reply, DNS answers for the names looked up (before
    DNAT, so Service traffic still shows the ClusterIP)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    packets = []
    for r in records:
        src, dst, sport = r["src_ip"], r["dst_ip"], r.get("src_port", 50000)
        if r["protocol"] == "TCP":
            packets.append(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=r["dst_port"], flags="S", seq=1000))
            packets.append(Ether() / IP(src=dst, dst=src) / TCP(sport=r["dst_port"], dport=sport, flags="SA",
                                                                 seq=5000, ack=1001))
            packets[-2].time, packets[-1].time = r["ts"], r["ts"] + 0.001
            continue
        qname = r.get("_qname", "kubernetes.default.svc.cluster.local")
        answer = EXTERNAL.get(qname, "10.96.0.1")
        query = DNS(id=len(packets) % 65536, rd=1, qd=DNSQR(qname=qname))
        reply = DNS(id=query.id, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname),
                    an=DNSRR(rrname=qname, type="A", ttl=300, rdata=answer))
        packets.append(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=53) / query)
        packets.append(Ether() / IP(src=dst, dst=src) / UDP(sport=53, dport=sport) / reply)
        packets[-2].time, packets[-1].time = r["ts"], r["ts"] + 0.002
    return packets


def main(out: Path) -> None:
    from scapy.utils import wrpcap

    objects, apps = build()
    snapshot = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects}
    (out / "cluster.yaml").write_text(yaml.safe_dump(snapshot, sort_keys=False))
    records = flows(apps)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
    (out / "flows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in public))
    wrpcap(str(out / "capture.pcap"), capture(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "ticket-booking")
