"""A deliberately naive NetworkPolicy evaluator, written straight from the API reference, to check the
indexed, cached ``Evaluator`` against.

It shares no code with ``netpol_gen``: it reads policies as the raw dicts ``kubectl apply`` takes,
applies the API server's defaulting itself, and for every question walks every policy, rule, peer
and pod. Slow and obvious on purpose; only valid policies are fed to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Policy = Mapping[str, Any]


@dataclass(frozen=True)
class NaivePod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    node: str
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # container port name -> (port, protocol)


@dataclass(frozen=True)
class NaiveCluster:
    namespace_labels: Mapping[str, Mapping[str, str]]
    pods: tuple[NaivePod, ...]
    node_ips: Mapping[str, str]  # node name -> address

    def pod_at(self, ip: str) -> NaivePod | None:
        return next((pod for pod in self.pods if pod.ip == ip), None)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """matchLabels and matchExpressions, all ANDed; NotIn and DoesNotExist hold when the key is absent."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def policy_types(policy: Policy) -> list[str]:
    """As defaulted by the API server: Ingress, plus Egress when there are egress rules."""
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def peer_matches(cluster: NaiveCluster, peer: Mapping[str, Any], policy_namespace: str, ip: str) -> bool:
    """An ipBlock matches addresses; selectors match pods only (never nodes or external addresses)."""
    if peer.get("ipBlock") is not None:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(ip)
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        if address.version != cidr.version or address not in cidr:
            return False
        return not any(address in ipaddress.ip_network(ex, strict=False) for ex in block.get("except") or [])
    pod = cluster.pod_at(ip)
    if pod is None:
        return False
    if peer.get("namespaceSelector") is not None:
        if not selector_matches(peer["namespaceSelector"], cluster.namespace_labels[pod.namespace]):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return peer.get("podSelector") is None or selector_matches(peer["podSelector"], pod.labels)


def port_matches(entry: Mapping[str, Any], port: int, protocol: str, destination: NaivePod | None) -> bool:
    """Protocol defaults to TCP; no port means all ports; a name is looked up on the destination pod."""
    if (entry.get("protocol") or "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str) and not wanted.isdigit():
        if destination is None or wanted not in destination.ports:
            return False
        return destination.ports[wanted] == (port, protocol)
    end_port = entry.get("endPort")
    if end_port is not None:
        return int(wanted) <= port <= end_port
    return int(wanted) == port


def side_allows(
    cluster: NaiveCluster,
    policies: list[Policy],
    direction: str,
    subject_ip: str,
    other_ip: str,
    port: int,
    protocol: str,
    destination: NaivePod | None,
) -> bool:
    """Whether the pod at ``subject_ip`` (if it is a pod) lets the connection through ``direction``."""
    subject = cluster.pod_at(subject_ip)
    if subject is None:
        return True  # policies apply to pods only
    if other_ip == subject_ip:
        return True  # a pod cannot block itself
    if cluster.node_ips.get(subject.node) == other_ip:
        return True  # traffic to and from the pod's own node is always allowed
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated = False
    for policy in policies:
        if policy["metadata"]["namespace"] != subject.namespace or direction not in policy_types(policy):
            continue
        if not selector_matches(policy["spec"].get("podSelector"), subject.labels):
            continue
        isolated = True
        for rule in policy["spec"].get(rules_key) or []:
            rule = rule or {}
            ports = rule.get("ports") or []
            peers = rule.get(peers_key) or []
            port_ok = not ports or any(port_matches(entry or {}, port, protocol, destination) for entry in ports)
            peer_ok = not peers or any(
                peer_matches(cluster, peer, policy["metadata"]["namespace"], other_ip) for peer in peers
            )
            if port_ok and peer_ok:
                return True
    return not isolated


def allowed(cluster: NaiveCluster, policies: list[Policy], src_ip: str, dst_ip: str, port: int, protocol: str) -> bool:
    """A connection is allowed iff the source's egress and the destination's ingress both allow it."""
    destination = cluster.pod_at(dst_ip)
    return side_allows(cluster, policies, "Egress", src_ip, dst_ip, port, protocol, destination) and side_allows(
        cluster, policies, "Ingress", dst_ip, src_ip, port, protocol, destination
    )
