"""Load a cluster snapshot: what ``kubectl get namespaces,pods,services,endpointslices,nodes -A -o yaml``
(or ``-o json``) writes, or multi-document YAML of the same objects, from one or more files.

Several snapshots taken over time may be given: a pod seen in several is kept once (by uid, the latest
view wins), and every pod keeps its creation and end time so attribution can ask who held an IP when.
ReplicaSets, Jobs and the workload controllers are used when present to name a pod's workload;
without them the workload is derived from the owner reference as Kubernetes names it.

The per-object converters (``parse_pod``, ``parse_service``, ...) are public: the live collector turns
the objects it lists and watches from the API into the same model objects with them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from netpol_gen.errors import SnapshotError
from netpol_gen.model.bounds import name_problem
from netpol_gen.model.cluster import (
    METADATA_NAME_LABEL,
    Cluster,
    ContainerPort,
    EndpointSlice,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
    SliceEndpoint,
    Workload,
)
from netpol_gen.model.documents import Document, load_documents

_CRONJOB_JOB = re.compile(r"^(?P<cronjob>.+)-\d{8,}$")  # CronJob jobs: <name>-<scheduled minute>


def parse_time(value: Any, where: str, obj: str) -> float | None:
    """RFC 3339 timestamp (as the API writes it) to epoch seconds. A time without a zone is UTC, as
    the API server's times are; an unquoted YAML timestamp arrives already parsed."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise SnapshotError(f"bad timestamp {value!r}", where=where, obj=obj) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _meta(doc: Document) -> tuple[dict[str, Any], str]:
    meta = doc.obj.get("metadata")
    kind = doc.obj.get("kind", "?")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise SnapshotError("metadata.name is missing", where=doc.where, obj=kind)
    ns = meta.get("namespace")
    label = f"{kind} {ns}/{meta['name']}" if ns else f"{kind} {meta['name']}"
    for field, value, namespace in (("metadata.name", meta["name"], kind == "Namespace"),
                                    ("metadata.namespace", ns, True)):
        problem = value is not None and name_problem(str(value), namespace=namespace)
        if problem:
            raise SnapshotError(f"{field}: {problem}", where=doc.where, obj=str(kind))
    return meta, label


def _mapping(raw: Any, where: str, obj: str, field: str) -> dict[str, Any]:
    """A field that must be an object; absent or null is empty."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SnapshotError(f"{field} must be a mapping, got {raw!r}", where=where, obj=obj)
    return raw


def _list(raw: Any, where: str, obj: str, field: str) -> list[Any]:
    """A field that must be a list; absent or null is empty."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SnapshotError(f"{field} must be a list, got {raw!r}", where=where, obj=obj)
    return raw


def _labels(raw: Any, where: str, obj: str, field: str = "metadata.labels") -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SnapshotError(f"{field} must be a mapping", where=where, obj=obj)
    return {str(k): str(v) for k, v in raw.items()}


def _ip(value: Any, where: str, obj: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise SnapshotError(f"{value!r} is not an IP address", where=where, obj=obj) from None


def _int(value: Any, where: str, obj: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError(f"{field} must be an integer, got {value!r}", where=where, obj=obj)
    return value


class Owners:
    """Owner chains (ReplicaSet -> Deployment, Job -> CronJob) from the objects in the snapshot.

    Empty, it names workloads from owner references alone (the live collector, which does not
    watch controllers, uses it so)."""

    def __init__(self) -> None:
        self.parent: dict[tuple[str, str, str], Workload | None] = {}

    def add(self, namespace: str, kind: str, name: str, meta: Mapping[str, Any]) -> None:
        """A controller seen in the snapshot: its own owner (None when it has none) is authoritative."""
        self.parent[(namespace, kind, name)] = _controller_ref(meta)

    def workload(self, namespace: str, pod_name: str, meta: Mapping[str, Any]) -> Workload:
        owner = _controller_ref(meta)
        if owner is None:
            return Workload("Pod", pod_name)
        seen = (namespace, owner.kind, owner.name)
        if seen in self.parent:  # the owner object is in the snapshot: no guessing from names
            return self.parent[seen] or owner
        if owner.kind == "ReplicaSet":
            template_hash = (meta.get("labels") or {}).get("pod-template-hash")
            if template_hash and owner.name.endswith(f"-{template_hash}"):
                return Workload("Deployment", owner.name[: -len(template_hash) - 1])
        if owner.kind == "Job":
            match = _CRONJOB_JOB.match(owner.name)
            if match:
                return Workload("CronJob", match["cronjob"])
        return owner


def _controller_ref(meta: Mapping[str, Any]) -> Workload | None:
    refs = meta.get("ownerReferences") or []
    chosen = next((r for r in refs if isinstance(r, dict) and r.get("controller")), None)
    if chosen is None and refs and isinstance(refs[0], dict):
        chosen = refs[0]
    if chosen is None or not chosen.get("kind") or not chosen.get("name"):
        return None
    return Workload(str(chosen["kind"]), str(chosen["name"]))


def parse_pod(doc: Document, owners: Owners) -> Pod:
    meta, label = _meta(doc)
    where = doc.where
    spec = _mapping(doc.obj.get("spec"), where, label, "spec")
    status = _mapping(doc.obj.get("status"), where, label, "status")
    namespace = meta.get("namespace") or "default"
    ips: list[str] = []
    for i, entry in enumerate(_list(status.get("podIPs"), where, label, "status.podIPs")):
        entry = _mapping(entry, where, label, f"status.podIPs[{i}]")
        if entry.get("ip"):
            ips.append(_ip(entry["ip"], where, label))
    if status.get("podIP"):
        first = _ip(status["podIP"], where, label)
        if first not in ips:
            ips.insert(0, first)
    ports: list[ContainerPort] = []
    for i, container in enumerate(_list(spec.get("containers"), where, label, "spec.containers")):
        field = f"spec.containers[{i}]"
        container = _mapping(container, where, label, field)
        for j, cport in enumerate(_list(container.get("ports"), where, label, f"{field}.ports")):
            cport = _mapping(cport, where, label, f"{field}.ports[{j}]")
            ports.append(
                ContainerPort(
                    port=_int(cport.get("containerPort"), where, label, f"{field}.ports[{j}].containerPort"),
                    protocol=str(cport.get("protocol") or "TCP"),
                    name=cport.get("name"),
                )
            )
    phase = str(status.get("phase") or "Running")
    ended = parse_time(meta.get("deletionTimestamp"), where, label)
    if ended is None and phase in ("Succeeded", "Failed"):
        ended = _finished_at(status, where, label)
    return Pod(
        namespace=namespace,
        name=str(meta["name"]),
        uid=str(meta.get("uid") or f"{namespace}/{meta['name']}"),
        labels=_labels(meta.get("labels"), where, label),
        ips=tuple(ips),
        workload=owners.workload(namespace, str(meta["name"]), meta),
        host_network=bool(spec.get("hostNetwork")),
        node_name=spec.get("nodeName"),
        container_ports=tuple(ports),
        created=parse_time(meta.get("creationTimestamp"), where, label),
        ended=ended,
        phase=phase,
    )


def _finished_at(status: Mapping[str, Any], where: str, label: str) -> float | None:
    times = [
        parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"), where, label)
        for cs in _list(status.get("containerStatuses"), where, label, "status.containerStatuses")
        if isinstance(cs, dict)
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def parse_service(doc: Document) -> Service:
    meta, label = _meta(doc)
    spec = _mapping(doc.obj.get("spec"), doc.where, label, "spec")
    status = _mapping(doc.obj.get("status"), doc.where, label, "status")
    ports = []
    for i, raw in enumerate(_list(spec.get("ports"), doc.where, label, "spec.ports")):
        raw = _mapping(raw, doc.where, label, f"spec.ports[{i}]")
        target = raw.get("targetPort")
        if target is not None and not isinstance(target, int | str):
            raise SnapshotError(f"spec.ports[{i}].targetPort must be a number or a name", where=doc.where, obj=label)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        ports.append(
            ServicePort(
                port=_int(raw.get("port"), doc.where, label, f"spec.ports[{i}].port"),
                protocol=str(raw.get("protocol") or "TCP"),
                name=raw.get("name"),
                target_port=target,
                node_port=raw.get("nodePort"),
            )
        )
    cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
    external = list(spec.get("externalIPs") or [])
    external += [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")]
    selector = spec.get("selector")
    return Service(
        namespace=meta.get("namespace") or "default",
        name=str(meta["name"]),
        selector=_labels(selector, doc.where, label, "spec.selector") if selector else None,
        ports=tuple(ports),
        cluster_ips=tuple(_ip(ip, doc.where, label) for ip in cluster_ips),
        external_ips=tuple(_ip(ip, doc.where, label) for ip in external),
        type=str(spec.get("type") or "ClusterIP"),
    )


def parse_endpoint_slice(doc: Document) -> EndpointSlice | None:
    meta, label = _meta(doc)
    service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    if not service:
        return None
    endpoints = []
    others: list[str] = []  # ready endpoints that are no pod (the API server's behind default/kubernetes)
    for i, ep in enumerate(_list(doc.obj.get("endpoints"), doc.where, label, "endpoints")):
        ep = _mapping(ep, doc.where, label, f"endpoints[{i}]")
        ref = _mapping(ep.get("targetRef"), doc.where, label, f"endpoints[{i}].targetRef")
        ready = (ep.get("conditions") or {}).get("ready")
        if ref.get("kind") != "Pod":
            if not ref and ready is not False:
                others.extend(_ip(a, doc.where, label) for a in ep.get("addresses") or [])
            continue
        endpoints.append(
            SliceEndpoint(
                pod_namespace=ref.get("namespace") or meta.get("namespace") or "default",
                pod_name=str(ref.get("name")),
                addresses=tuple(_ip(a, doc.where, label) for a in ep.get("addresses") or []),
                ready=ready is not False,
            )
        )
    ports = tuple(
        ContainerPort(
            port=_int(p.get("port"), doc.where, label, "ports[].port"),
            protocol=str(p.get("protocol") or "TCP"),
            name=p.get("name") or None,
        )
        for p in _list(doc.obj.get("ports"), doc.where, label, "ports")
        if isinstance(p, dict) and p.get("port") is not None
    )
    return EndpointSlice(meta.get("namespace") or "default", str(service), tuple(endpoints), ports, tuple(others))


def parse_node(doc: Document) -> Node:
    meta, label = _meta(doc)
    spec = _mapping(doc.obj.get("spec"), doc.where, label, "spec")
    status = _mapping(doc.obj.get("status"), doc.where, label, "status")
    addresses = [
        _ip(a.get("address"), doc.where, label)
        for a in _list(status.get("addresses"), doc.where, label, "status.addresses")
        if isinstance(a, dict) and a.get("type") in ("InternalIP", "ExternalIP")
    ]
    cidrs = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise SnapshotError(f"podCIDR {cidr!r} is not a CIDR", where=doc.where, obj=label) from None
    return Node(name=str(meta["name"]), addresses=tuple(addresses), pod_cidrs=tuple(cidrs))


def parse_namespace(doc: Document) -> Namespace:
    meta, label = _meta(doc)
    labels = _labels(meta.get("labels"), doc.where, label)
    labels.setdefault(METADATA_NAME_LABEL, str(meta["name"]))  # the API server always sets it
    return Namespace(str(meta["name"]), labels)


def _newer_view(seen: Pod | None, pod: Pod) -> Pod:
    """Of two views of one pod, the later given wins, except that a view in which the pod has ended
    (deleted, or finished) is always the newer one: a pod never comes back, whatever the file order."""
    if seen is not None and seen.ended is not None and pod.ended is None:
        return seen
    return pod


def load_cluster(paths: Iterable[str], *, require_pods: bool = False) -> Cluster:
    """Load and index one or more snapshot files or directories."""
    paths = list(paths)
    docs = list(load_documents(paths, SnapshotError))
    owners = Owners()
    for doc in docs:
        kind = doc.obj.get("kind")
        if kind in ("ReplicaSet", "Job"):
            meta, _ = _meta(doc)
            owners.add(meta.get("namespace") or "default", str(kind), str(meta["name"]), meta)
    namespaces: dict[str, Namespace] = {}
    pods: dict[str, Pod] = {}
    services: dict[str, Service] = {}
    slices: dict[str, EndpointSlice] = {}
    nodes: dict[str, Node] = {}
    for doc in docs:
        kind = doc.obj.get("kind")
        if not kind:
            raise SnapshotError("object has no kind", where=doc.where)
        if kind == "Namespace":
            ns = parse_namespace(doc)
            namespaces[ns.name] = ns
        elif kind == "Pod":
            pod = parse_pod(doc, owners)
            pods[pod.uid] = _newer_view(pods.get(pod.uid), pod)
        elif kind == "Service":
            svc = parse_service(doc)
            services[svc.key] = svc
        elif kind == "EndpointSlice":
            eps = parse_endpoint_slice(doc)
            if eps is not None:
                slices[f"{doc.obj['metadata'].get('namespace')}/{doc.obj['metadata']['name']}"] = eps
        elif kind == "Node":
            node = parse_node(doc)
            nodes[node.name] = node
    if require_pods and not pods:
        raise SnapshotError("snapshot has no pods", where=", ".join(paths))
    return Cluster.build(namespaces.values(), pods.values(), services.values(), slices.values(), nodes.values())
