"""Attribution: which identities a flow connects, as the cluster was at the flow's timestamp.

An IP is whatever held it *at that time* (:meth:`Cluster.endpoint`): an IP no known pod held then is
an unknown cluster IP, never today's owner. A Service address (ClusterIP, external/LB IP, or a node
IP with a nodePort) is replaced by the Service's backend pods and the targetPort on each of them,
and by the addresses of its slices' endpoints that are no pod (the API server's, behind
``default/kubernetes``, on the slice's port); the Service address itself never becomes a destination.
A source that is a node address (including the first two addresses of a node's pod CIDR, which bridge
and tunnel interfaces use when kube-proxy masquerades NodePort/LoadBalancer traffic) is recorded as
that node.

What an address stands for only changes at the instants :meth:`Cluster.change_times` lists for it, so
lookups are cached per (address, interval between two such instants): the same answer the cluster
would give, at dictionary speed.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from dataclasses import dataclass

from netpol_gen.model.cluster import Cluster, EndpointKind
from netpol_gen.model.flows import Flow
from netpol_gen.model.identity import Identity, IdentityKind

_CACHE_LIMIT = 500_000  # entries per cache before it is dropped: bounded memory for the collector


@dataclass(frozen=True, slots=True, eq=False)
class End:
    """One end of a flow: its identity and, when it was one pod, that pod's uid (evidence).

    Compared by object identity (as :class:`Destination` is): the attributor returns one cached
    object per address and interval, so per-flow aggregation hashes a pointer, not six fields.
    """

    identity: Identity
    pod_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A destination and the port the connection reached on it (a Service's targetPort)."""

    end: End
    port: int


@dataclass(frozen=True, slots=True, eq=False)
class Destination:
    """Where a flow went: its targets, and the Service (``namespace/name``) it went through.

    ``targets`` is empty when the address was a Service's but the Service had no such port or no
    backend at the time: the flow cannot be attributed and must not become an edge to the ClusterIP.
    """

    targets: tuple[Target, ...]
    service: str | None = None


class Attributor:
    """Caching attribution of flow ends against one :class:`Cluster`.

    Lookups are cached per address and stretch of that address's :meth:`Cluster.change_times` (not
    per stretch between any two pod events): a Service in a namespace whose pods restart often
    changes meaning at those instants only, an address nobody else shares almost never."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._service_ips = {ip for svc in cluster.services for ip in (*svc.cluster_ips, *svc.external_ips)}
        self._gateways: dict[str, str] = {}
        for node in cluster.nodes:
            for cidr in node.pod_cidrs:
                base = ipaddress.ip_network(cidr, strict=False).network_address
                self._gateways[str(base)] = self._gateways[str(base + 1)] = node.name
        self._ends: dict[tuple[str, int], End] = {}
        self._destinations: dict[tuple[str, int, str, int], Destination] = {}

    def _stretch(self, ip: str, ts: float | None) -> int:
        return -1 if ts is None else bisect_right(self._cluster.change_times(ip), ts)

    def source(self, flow: Flow) -> End:
        return self.end(flow.src_ip, flow.ts)

    def end(self, ip: str, ts: float | None) -> End:
        return self.end_in(ip, self._stretch(ip, ts), ts)

    def end_in(self, ip: str, stretch: int, ts: float | None) -> End:
        """:meth:`end`, for a caller that knows the ``stretch`` of ``ip``'s change times ``ts`` falls in
        (``bisect_right`` of :meth:`Cluster.change_times`, -1 for no time): the importer's groups do."""
        key = (ip, stretch)
        found = self._ends.get(key)
        if found is None:
            if len(self._ends) >= _CACHE_LIMIT:
                self._ends.clear()
            found = self._ends[key] = self._resolve_end(ip, ts)
        return found

    def destination(self, flow: Flow) -> Destination:
        return self.destination_in(flow.dst_ip, flow.dst_port, flow.protocol,
                                   self._stretch(flow.dst_ip, flow.ts), flow.ts)

    def destination_in(self, ip: str, port: int, protocol: str, stretch: int, ts: float | None) -> Destination:
        """:meth:`destination` of a flow to ``ip``, ``port``, ``protocol`` at ``ts``, in ``stretch`` (as
        for :meth:`end_in`)."""
        key = (ip, port, protocol, stretch)
        found = self._destinations.get(key)
        if found is None:
            if len(self._destinations) >= _CACHE_LIMIT:
                self._destinations.clear()
            found = self._destinations[key] = self._resolve_destination(ip, port, protocol, ts)
        return found

    def _resolve_end(self, ip: str, ts: float | None) -> End:
        endpoint = self._cluster.endpoint(ip, ts)
        if endpoint.pod is not None:
            return End(Identity.of_pod(endpoint.pod), endpoint.pod.uid)
        if endpoint.node is not None:
            return End(Identity.of_node(endpoint.node.name))
        if endpoint.kind is EndpointKind.UNKNOWN_CLUSTER_IP:
            gateway = self._gateways.get(ip)
            if gateway is not None:
                return End(Identity.of_node(gateway))
            return End(Identity.of_address(IdentityKind.UNKNOWN, ip))
        return End(Identity.of_address(IdentityKind.EXTERNAL, ip))

    def _resolve_destination(self, ip: str, port: int, protocol: str, ts: float | None) -> Destination:
        target = self._cluster.service_target(ip, port, protocol, ts)
        if target is None:
            if ip in self._service_ips:
                return Destination(())
            return Destination((Target(self._resolve_end(ip, ts), port),))
        # Backends of one workload on one targetPort are one edge; a pod uid only when unambiguous.
        pods_by_target: dict[tuple[Identity, int], list[str]] = {}
        for backend in target.backends:
            pods_by_target.setdefault((Identity.of_pod(backend.pod), backend.port), []).append(backend.pod.uid)
        targets = tuple(
            Target(End(identity, uids[0] if len(uids) == 1 else None), port)
            for (identity, port), uids in pods_by_target.items()
        ) + tuple(Target(self._resolve_end(other, ts), other_port) for other, other_port in target.others)
        return Destination(targets, target.service.key)
