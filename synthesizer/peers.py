"""Rule peers for edge ends: a workload by its labels (with its namespace by name when it lives
elsewhere), a node or an external address by ipBlock. A pod is never an ipBlock: its IP is gone at
its next restart."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from netpol_gen.model.cluster import METADATA_NAME_LABEL
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import LearnedEdge, LearnedInputs, workload_key
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.ports import PortRef
from netpol_gen.synthesizer.selectors import SelectorCache, ordered_keys


@dataclass(frozen=True, slots=True)
class PeerRef:
    """A ``from``/``to`` entry. With ``cidr`` it is an ipBlock and ``note`` says what the block stands
    for; otherwise pods with ``labels``, in ``namespace`` (None: the policy's own namespace)."""

    kind: IdentityKind
    labels: tuple[tuple[str, str], ...] = ()
    namespace: str | None = None
    cidr: str | None = None
    note: str = ""

    @property
    def fold_key(self) -> tuple[tuple[tuple[str, str], ...], str, str]:
        """(the other labels, the key, its value) for a pod peer: the key is the first of its labels in
        the selectors' preference order, the one whose values tell workloads apart. Peers of one
        namespace with the same other labels and key differ only in that value (see :mod:`.fold`)."""
        return _fold_key(self.labels)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """Pods by namespace and fold group, so a folded peer sorts where its members did."""
        if self.cidr is None:
            others, key, value = self.fold_key
            return (0, self.namespace or "", others, key, (value,))
        return (1, *_network_key(self.cidr))

    def describe(self) -> str:
        """The selector as ``key=value,...`` (``--explain`` names the value behind each edge of a fold)."""
        return ",".join(f"{k}={v}" for k, v in self.labels) if self.cidr is None else self.cidr

    def render(self) -> dict[str, Any]:
        if self.cidr is not None:
            return {"ipBlock": {"cidr": self.cidr}}
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.labels)} if self.labels else {}}
        if self.namespace is not None:
            peer["namespaceSelector"] = {"matchLabels": {METADATA_NAME_LABEL: self.namespace}}
        return peer


@dataclass(frozen=True, slots=True)
class Grant:
    """What a peer is allowed (``ports``) and the observed edges that justify it (``--explain``)."""

    ports: frozenset[PortRef]
    edges: tuple[LearnedEdge, ...]


@lru_cache(maxsize=1 << 16)
def _fold_key(labels: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """:attr:`PeerRef.fold_key` of these labels, memoised: a peer's is asked for by every rule and sort it is in."""
    if not labels:
        return ((), "", "")
    key = ordered_keys(k for k, _ in labels)[0]
    return (tuple(item for item in labels if item[0] != key), key, dict(labels)[key])


@lru_cache(maxsize=1 << 16)
def _network_key(cidr: str) -> tuple[int, int, int]:
    """(version, network address, prefix length) of a CIDR, parsed once: sorts ask for it per comparison key."""
    network = ipaddress.ip_network(cidr)
    return (network.version, int(network.network_address), network.prefixlen)


def host_cidr(ip: str) -> str:
    """The /32 or /128 of an address, spelt as ``ipaddress`` spells it (IPv4 read in C: most are)."""
    with contextlib.suppress(OSError):
        return f"{socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, ip))}/32"
    address = ipaddress.ip_address(ip)
    return f"{address}/{address.max_prefixlen}"


class PeerFactory:
    """Turns identities into peers, collecting warnings about peers broader than the workload."""

    def __init__(self, inputs: LearnedInputs, selectors: SelectorCache) -> None:
        self._inputs = inputs
        self._selectors = selectors
        self.warnings: set[str] = set()
        self._made: dict[tuple[Identity, str], tuple[PeerRef, ...]] = {}

    def peers(self, identity: Identity, policy_namespace: str) -> tuple[PeerRef, ...]:
        """The peers standing for ``identity`` in a policy of ``policy_namespace``, made once per pair
        (every edge of an identity asks again)."""
        key = (identity, policy_namespace)
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = tuple(self._peers(identity, policy_namespace))
        return found

    def _peers(self, identity: Identity, policy_namespace: str) -> list[PeerRef]:
        kind = identity.kind
        if kind is IdentityKind.POD:
            key = workload_key(identity)
            labels = tuple(sorted(self._selectors.choice(key).match_labels.items()))
            if not labels:
                self.warnings.add(f"peer {'/'.join(key)} has no selectable labels: allowed as every pod of "
                                  f"namespace {key[0]}")
            namespace = key[0] if key[0] != policy_namespace else None
            return [PeerRef(IdentityKind.POD, labels=labels, namespace=namespace)]
        if kind is IdentityKind.NODE:
            node = identity.node or ""
            note = f"node {node}"
            return [PeerRef(IdentityKind.NODE, cidr=host_cidr(ip), note=note) for ip in self._inputs.nodes[node]]
        ip = identity.ip or ""
        if kind is IdentityKind.EXTERNAL:
            names = sorted(set(self._inputs.dns_names.get(ip, ())))
            note = ", ".join(names) if names else "external, no DNS name seen"
        else:
            note = "unknown cluster IP"
        return [PeerRef(kind, cidr=host_cidr(ip), note=note)]


def fold_external(grants: Mapping[PeerRef, Grant], options: Options) -> dict[PeerRef, Grant]:
    """Fold external addresses allowed the same ports that share a ``cidr_aggregate`` prefix into one
    ipBlock of that prefix: fewer peers, at the price of the rest of the prefix (the user's choice)."""
    prefixes = {4: options.cidr_aggregate, 6: options.cidr_aggregate_v6}
    if prefixes[4] is None and prefixes[6] is None:
        return dict(grants)  # nothing to fold: no address to parse
    folded: dict[PeerRef, Grant] = {}
    groups: dict[tuple[str, frozenset[PortRef]], list[PeerRef]] = defaultdict(list)
    for peer, grant in grants.items():
        host = ipaddress.ip_network(peer.cidr) if peer.cidr and peer.kind is IdentityKind.EXTERNAL else None
        prefix = prefixes[host.version] if host is not None else None
        if host is None or prefix is None or prefix >= host.prefixlen:
            folded[peer] = grant
            continue
        groups[(str(host.supernet(new_prefix=prefix)), grant.ports)].append(peer)
    for (network, ports), members in groups.items():
        if len(members) == 1:
            folded[members[0]] = grants[members[0]]
            continue
        members.sort(key=lambda p: p.sort_key)
        note = "; ".join(f"{(m.cidr or '').split('/')[0]} {m.note}" for m in members)
        edges = tuple(edge for m in members for edge in grants[m].edges)
        folded[PeerRef(IdentityKind.EXTERNAL, cidr=network, note=note)] = Grant(ports, edges)
    return folded
