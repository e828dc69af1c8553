"""The cluster as NetworkPolicy semantics needs it: pods, namespaces, Services, nodes, and the lookups
that turn an IP (at a time) into an endpoint and a Service address into backends and targetPorts.

Objects are immutable and carry the identity they had in the snapshot; a pod also carries the
interval in which it held its IPs, so a flow is attributed to the pod that owned an IP *when the
packet was seen*, never to whoever owns it today.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import TypeVar

from netpol_gen.model.bounds import DestinationPort, NamespaceName, ObjectName, Protocol, Seconds
from netpol_gen.model.dns import DnsAnswerSeen, DnsHistory

METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
LOOKUP_CACHE_LIMIT = 1 << 18  # memoised lookups per cache; beyond it the cache starts over

_K = TypeVar("_K")
_V = TypeVar("_V")


@lru_cache(maxsize=1 << 16)
def ip_version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def address_value(ip: str) -> tuple[int, int]:
    """An address's IP version and value as an int (a scope id is ignored, as network tests do): what
    ``ipaddress.ip_address`` reads, strictly (``inet_pton`` refuses what it refuses, e.g. ``1.2.3``,
    octets with leading zeros), in C for the two plain spellings (a new address costs ~0.3 us, not ~3)."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except OSError:
        pass
    if "%" not in ip:  # a scoped address: ipaddress reads the scope, inet_pton refuses it
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        except OSError:
            pass
    address = ipaddress.ip_address(ip)  # anything else: as before (raises on what is no address)
    return address.version, int(address)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: DestinationPort
    protocol: Protocol = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """The controller a pod belongs to (Deployment, StatefulSet, DaemonSet, CronJob, Job) or the pod."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, eq=False)
class Pod:
    """A pod as the snapshot saw it; equality is identity, as every pod object is loaded once."""

    namespace: NamespaceName
    name: ObjectName
    uid: str
    labels: Mapping[str, str]
    ips: tuple[str, ...]
    workload: Workload
    host_network: bool = False
    node_name: ObjectName | None = None
    container_ports: tuple[ContainerPort, ...] = ()
    created: Seconds | None = None
    ended: Seconds | None = None  # deletionTimestamp, or when a finished pod's containers stopped
    phase: str = "Running"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def held_ip_at(self, ts: float) -> bool:
        """Whether the pod held its IPs at ``ts`` (seconds since the epoch)."""
        if self.created is not None and ts < self.created:
            return False
        return self.ended is None or ts < self.ended

    @property
    def is_live(self) -> bool:
        return self.ended is None and self.phase not in ("Succeeded", "Failed")

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of the container port called ``name`` with ``protocol``, or None."""
        for cport in self.container_ports:
            if cport.name == name and cport.protocol == protocol:
                return cport.port
        return None

    def describe(self) -> str:
        return f"{self.key} ({self.workload})"


@dataclass(frozen=True, slots=True)
class Namespace:
    name: NamespaceName
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: DestinationPort
    protocol: Protocol = "TCP"
    name: str | None = None
    target_port: DestinationPort | str | None = None  # None: same as ``port``
    node_port: DestinationPort | None = None


@dataclass(frozen=True, eq=False)
class Service:
    namespace: NamespaceName
    name: ObjectName
    selector: Mapping[str, str] | None
    ports: tuple[ServicePort, ...]
    cluster_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()  # spec.externalIPs and load-balancer ingress IPs
    type: str = "ClusterIP"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    pod_namespace: NamespaceName
    pod_name: ObjectName
    addresses: tuple[str, ...]
    ready: bool = True


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: NamespaceName
    service_name: ObjectName
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[ContainerPort, ...]  # a slice's port has a container port's shape: number, protocol, name
    # ready endpoints that are no pod: the API server's addresses behind default/kubernetes, or what a
    # selectorless Service's hand-written slice names
    other_addresses: tuple[str, ...] = ()


API_SERVER_SERVICE = "default/kubernetes"  # the Service whose endpoints are the API server's addresses


@dataclass(frozen=True, eq=False)
class Node:
    name: ObjectName
    addresses: tuple[str, ...]
    pod_cidrs: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"node {self.name}"


class EndpointKind(Enum):
    POD = "pod"
    NODE = "node"  # a node address: kubelet, host-network pods, SNATed traffic
    UNKNOWN_CLUSTER_IP = "unknown-cluster-ip"  # inside a pod CIDR but held by no known pod then
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a flow: an IP and what it was at the time. Only POD endpoints are policy subjects."""

    ip: str
    kind: EndpointKind
    pod: Pod | None = None
    node: Node | None = None
    names: frozenset[str] = frozenset()  # an external address: the DNS names it answered for at the time
    api_server: bool = False  # an address the API server listens on (Cilium's entity kube-apiserver)

    @classmethod
    def of_pod(cls, pod: Pod, peer_ip: str) -> Endpoint:
        """The pod as reached from ``peer_ip``: its address of the same IP family (dual-stack pods)."""
        if len(pod.ips) == 1:  # the usual single-stack pod: no family to choose
            return cls(pod.ips[0], EndpointKind.POD, pod=pod)
        version = ip_version(peer_ip)
        ip = next((a for a in pod.ips if ip_version(a) == version), pod.ips[0])
        return cls(ip, EndpointKind.POD, pod=pod)

    def describe(self) -> str:
        if self.pod is not None:
            return self.pod.describe()
        if self.node is not None:
            return f"{self.ip} ({self.node.describe()})"
        if self.kind is EndpointKind.UNKNOWN_CLUSTER_IP:
            return f"{self.ip} (unknown cluster IP)"
        return self.ip


@dataclass(frozen=True, slots=True)
class Backend:
    """A pod behind a Service address and the port the connection reaches on it (the targetPort)."""

    pod: Pod
    port: int


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    service: Service
    port: ServicePort
    backends: tuple[Backend, ...]
    others: tuple[tuple[str, int], ...] = ()  # backends that are no pod (address, port): the API server's


@dataclass
class Cluster:
    """Indexed cluster objects; build with :meth:`build`."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    endpoint_slices: list[EndpointSlice] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    api_servers: frozenset[str] = frozenset()  # given (the store's), besides what default/kubernetes's slices say
    _pods_by_ip: dict[str, list[Pod]] = field(default_factory=dict, repr=False)
    _pods_by_ns: dict[str, list[Pod]] = field(default_factory=dict, repr=False)
    _pods_by_key: dict[str, list[Pod]] = field(default_factory=dict, repr=False)
    _node_by_ip: dict[str, Node] = field(default_factory=dict, repr=False)
    _service_by_ip: dict[str, list[Service]] = field(default_factory=dict, repr=False)
    _service_by_node_port: dict[tuple[int, str], tuple[Service, ServicePort]] = field(
        default_factory=dict, repr=False
    )
    _slices_by_service: dict[str, list[EndpointSlice]] = field(default_factory=dict, repr=False)
    # the nodes' pod CIDRs: (IP version, prefix length) -> the networks' leading bits, as ints
    _pod_networks: dict[tuple[int, int], frozenset[int]] = field(default_factory=dict, repr=False)
    dns: DnsHistory = field(default_factory=DnsHistory)
    _pod_times: list[float] = field(default_factory=list, repr=False)
    _endpoints: dict[tuple[str, int], Endpoint] = field(default_factory=dict, repr=False)
    _change_times: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _end_times: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _targets: dict[tuple[str, int, str, int], ServiceTarget | None] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        services: Iterable[Service] = (),
        endpoint_slices: Iterable[EndpointSlice] = (),
        nodes: Iterable[Node] = (),
        dns: Iterable[DnsAnswerSeen] = (),
        api_servers: Iterable[str] = (),
    ) -> Cluster:
        cluster = cls(
            namespaces={ns.name: ns for ns in namespaces},
            pods=list(pods),
            services=list(services),
            endpoint_slices=list(endpoint_slices),
            nodes=list(nodes),
            dns=DnsHistory.of(dns),
            api_servers=frozenset(api_servers),
        )
        cluster._index()
        return cluster

    def _index(self) -> None:
        by_ip: dict[str, list[Pod]] = defaultdict(list)
        by_ns: dict[str, list[Pod]] = defaultdict(list)
        by_key: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            by_ns[pod.namespace].append(pod)
            by_key[pod.key].append(pod)
            if not pod.host_network:
                for ip in pod.ips:
                    by_ip[ip].append(pod)
            self.namespaces.setdefault(
                pod.namespace, Namespace(pod.namespace, {METADATA_NAME_LABEL: pod.namespace})
            )
        self._pods_by_ip, self._pods_by_ns, self._pods_by_key = dict(by_ip), dict(by_ns), dict(by_key)
        self._pod_times = sorted({t for pod in self.pods for t in (pod.created, pod.ended) if t is not None}
                                 | self.dns.boundaries())
        self._endpoints, self._targets, self._change_times, self._end_times = {}, {}, {}, {}
        self._node_by_ip = {ip: node for node in self.nodes for ip in node.addresses}
        networks: dict[tuple[int, int], set[int]] = defaultdict(set)
        for node in self.nodes:
            for cidr in node.pod_cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                leading = int(net.network_address) >> (net.max_prefixlen - net.prefixlen)
                networks[net.version, net.prefixlen].add(leading)
        self._pod_networks = {key: frozenset(found) for key, found in networks.items()}
        service_by_ip: dict[str, list[Service]] = defaultdict(list)
        for svc in self.services:
            for ip in (*svc.cluster_ips, *svc.external_ips):
                service_by_ip[ip].append(svc)
            for sport in svc.ports:
                if sport.node_port:
                    self._service_by_node_port[(sport.node_port, sport.protocol)] = (svc, sport)
        self._service_by_ip = dict(service_by_ip)
        slices: dict[str, list[EndpointSlice]] = defaultdict(list)
        for eps in self.endpoint_slices:
            slices[f"{eps.namespace}/{eps.service_name}"].append(eps)
        self._slices_by_service = dict(slices)
        self.api_servers = self.api_servers | {
            ip for eps in slices.get(API_SERVER_SERVICE, ()) for ip in eps.other_addresses}

    def set_dns(self, answers: Iterable[DnsAnswerSeen], api_servers: Iterable[str] = ()) -> None:
        """Replace the DNS answers external addresses are named by and add API server addresses (what a
        store learnt, or flows carry: ``check --db``), re-indexing."""
        self.dns = DnsHistory.of(answers)
        self.api_servers = self.api_servers | set(api_servers)
        self._index()

    # --- lookups -------------------------------------------------------------------------------

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        ns = self.namespaces.get(namespace)
        return ns.labels if ns is not None else {METADATA_NAME_LABEL: namespace}

    def pods_in(self, namespace: str) -> list[Pod]:
        return self._pods_by_ns.get(namespace, [])

    def pod_named(self, namespace: str, name: str, ts: float | None = None) -> Pod | None:
        return _pick(self._pods_by_key.get(f"{namespace}/{name}", []), ts)

    def pod_at(self, ip: str, ts: float | None = None) -> Pod | None:
        """The pod that held ``ip`` at ``ts``; without a time, the live pod holding it now."""
        return _pick(self._pods_by_ip.get(ip, []), ts)

    def node_at(self, ip: str) -> Node | None:
        return self._node_by_ip.get(ip)

    def in_pod_network(self, ip: str) -> bool:
        """Whether ``ip`` is in some node's pod CIDR: one set test per distinct prefix length (the
        nodes' CIDRs usually share one), not a scan of every node's networks, for each new address."""
        version, value = address_value(ip)
        bits = 32 if version == 4 else 128
        return any(value >> (bits - prefix) in found
                   for (net_version, prefix), found in self._pod_networks.items() if net_version == version)

    def epoch(self, ts: float | None) -> int:
        """Which stretch of time ``ts`` falls in, for memoising time-dependent lookups.

        Which pods hold their IPs changes only at a pod's creation or end, and which names an address
        stands for only at the edges of a DNS answer's window, so between two consecutive such
        instants every lookup by time gives the same answer; the epoch numbers those stretches (-1 for
        no time, i.e. the live pods)."""
        return -1 if ts is None else bisect_right(self._pod_times, ts)

    def change_times(self, ip: str) -> list[float]:
        """The instants, sorted, at which what ``ip`` stands for may change: as an end (the pods that
        held it, or for another address the edges of its DNS answers) and as a Service address (the
        pods of the namespaces of its Services, which may become or stop being backends). Every lookup
        by ``ip`` and time (:meth:`endpoint`, :meth:`service_target` on any port) gives one answer
        between two consecutive ones, a finer stretch than :meth:`epoch` (which changes with any
        pod). A node address stands for the nodePorts of every Service: its stretches are the epochs."""
        found = self._change_times.get(ip)
        if found is None:
            if ip in self._node_by_ip:
                found = self._pod_times
            else:
                pods = list(self._pods_by_ip.get(ip, ()))
                namespaces = {svc.namespace for svc in self._service_by_ip.get(ip, ())}
                namespaces |= {ep.pod_namespace for svc in self._service_by_ip.get(ip, ())
                               for eps in self._slices_by_service.get(svc.key, ()) for ep in eps.endpoints}
                for namespace in namespaces:
                    pods.extend(self.pods_in(namespace))
                found = self._times(pods, ip)
            found = remember(self._change_times, ip, found)
        return found

    def end_change_times(self, ip: str) -> list[float]:
        """The instants, sorted, at which what ``ip`` stands for as an end (:meth:`endpoint`, not
        :meth:`service_target`) may change: the creation and end of the pods that held it, or for an
        address no pod held the edges of its DNS answers. A flow's source is only an end, and for a
        node address this is far coarser than :meth:`change_times` (the epochs: its nodePorts)."""
        found = self._end_times.get(ip)
        if found is None:
            found = remember(self._end_times, ip, self._times(self._pods_by_ip.get(ip, []), ip))
        return found

    def _times(self, pods: list[Pod], ip: str) -> list[float]:
        times = {t for pod in pods for t in (pod.created, pod.ended) if t is not None}
        if not pods:
            times |= self.dns.boundaries_of(ip)
        return sorted(times)

    def endpoint(self, ip: str, ts: float | None = None) -> Endpoint:
        """What ``ip`` was at ``ts``: a pod, a node, an unknown pod-network address, or external."""
        key = (ip, self.epoch(ts))
        found = self._endpoints.get(key)
        if found is None:
            found = remember(self._endpoints, key, self._resolve_endpoint(ip, ts))
        return found

    def _resolve_endpoint(self, ip: str, ts: float | None) -> Endpoint:
        pod = self.pod_at(ip, ts)
        if pod is not None:
            return Endpoint(ip, EndpointKind.POD, pod=pod)
        node = self._node_by_ip.get(ip)
        api_server = ip in self.api_servers
        if node is not None:
            return Endpoint(ip, EndpointKind.NODE, node=node, api_server=api_server)
        if self._pods_by_ip.get(ip) or self.in_pod_network(ip):
            return Endpoint(ip, EndpointKind.UNKNOWN_CLUSTER_IP, api_server=api_server)
        return Endpoint(ip, EndpointKind.EXTERNAL, names=self.dns.names_at(ip, ts), api_server=api_server)

    def service_target(
        self, ip: str, port: int, protocol: str, ts: float | None = None
    ) -> ServiceTarget | None:
        """Resolve a Service address (ClusterIP, external/LB IP, or node IP + nodePort) to its
        backends, each with the targetPort resolved on that pod (named targetPorts per pod)."""
        key = (ip, port, protocol, self.epoch(ts))
        if key in self._targets:
            return self._targets[key]
        return remember(self._targets, key, self._resolve_service_target(ip, port, protocol, ts))

    def _resolve_service_target(self, ip: str, port: int, protocol: str, ts: float | None) -> ServiceTarget | None:
        found = None
        for svc in self._service_by_ip.get(ip, []):
            sport = next((p for p in svc.ports if p.port == port and p.protocol == protocol), None)
            if sport is not None:
                found = (svc, sport)
                break
        if found is None and ip in self._node_by_ip:
            found = self._service_by_node_port.get((port, protocol))
        if found is None:
            return None
        svc, sport = found
        return ServiceTarget(svc, sport, tuple(self._backends(svc, sport, ts)), self._other_backends(svc, sport))

    def _other_backends(self, svc: Service, sport: ServicePort) -> tuple[tuple[str, int], ...]:
        """The Service's ready slice endpoints that are no pod, with the slice's port for ``sport``."""
        found: list[tuple[str, int]] = []
        for eps in self._slices_by_service.get(svc.key, ()):
            port = next((p for p in eps.ports if p.name == sport.name and p.protocol == sport.protocol), None)
            if port is not None:
                found.extend((ip, port.port) for ip in eps.other_addresses)
        return tuple(found)

    def _backends(self, svc: Service, sport: ServicePort, ts: float | None) -> list[Backend]:
        slices = self._slices_by_service.get(svc.key)
        backends: list[Backend] = []
        if slices:
            for eps in slices:
                slice_port = next(
                    (p for p in eps.ports if p.name == sport.name and p.protocol == sport.protocol), None
                )
                if slice_port is None:
                    continue
                for ep in eps.endpoints:
                    pod = self.pod_named(ep.pod_namespace, ep.pod_name, ts)
                    if pod is not None and ep.ready:
                        backends.append(Backend(pod, slice_port.port))
            return backends
        if not svc.selector:
            return backends
        for pod in self.pods_in(svc.namespace):
            if pod.host_network or not pod.ips or not _alive(pod, ts):  # Pending pods have no IP yet
                continue
            if all(pod.labels.get(k) == v for k, v in svc.selector.items()):
                target = resolve_target_port(pod, sport)
                if target is not None:
                    backends.append(Backend(pod, target))
        return backends


def resolve_target_port(pod: Pod, sport: ServicePort) -> int | None:
    """The port a Service port reaches on ``pod``: a number, or a named container port of that pod."""
    target = sport.target_port
    if target is None:
        return sport.port
    if isinstance(target, int):
        return target
    return pod.named_port(target, sport.protocol)


def remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store ``value`` in a memo bounded by LOOKUP_CACHE_LIMIT (a scan of random addresses must not
    grow it without end; starting over is cheap as live entries are soon recomputed)."""
    if len(cache) >= LOOKUP_CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _alive(pod: Pod, ts: float | None) -> bool:
    return pod.is_live if ts is None else pod.held_ip_at(ts)


def _pick(candidates: list[Pod], ts: float | None) -> Pod | None:
    """Of the pods that held an address (or name), the one holding it at ``ts``; latest created wins."""
    alive = [pod for pod in candidates if _alive(pod, ts)]
    if not alive:
        return None
    return max(alive, key=lambda pod: pod.created or 0.0)
