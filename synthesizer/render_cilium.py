"""The synthesized policies as Cilium ``cilium.io/v2`` CiliumNetworkPolicies, one per workload.

Same rules as the NetworkPolicy set, in Cilium's terms: pods by ``endpointSelector`` and
``fromEndpoints``/``toEndpoints`` carrying ``k8s:io.kubernetes.pod.namespace``; nodes as the
entities ``host`` and ``remote-node`` (Cilium's CIDR rules never select nodes), the API server's
addresses (``default/kubernetes``'s endpoints) as the entity ``kube-apiserver``; an external address
by the DNS names observed for it as ``toFQDNs`` ``matchName`` (or, with ``fqdn_patterns``, a
``matchPattern`` ``*.parent`` for two or more names under one parent domain), else as ``toCIDRSet``.
``toFQDNs`` only works when Cilium's DNS proxy sees the lookups, so the policy's rule to the observed
resolver (every edge of it on port 53) carries ``rules.dns`` ``matchPattern: "*"`` on port 53 by number; a workload with
no such rule keeps its named addresses as CIDRs (and the report says so). A direction that is
enforced with nothing allowed is ``[{}]``, Cilium's default-deny rule.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from netpol_gen.model.cluster import METADATA_NAME_LABEL
from netpol_gen.model.learned import LearnedEdge, LearnedInputs
from netpol_gen.synthesizer.explain import RuleEvidence

API_VERSION = "cilium.io/v2"
NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"
NODE_ENTITIES = ["host", "remote-node"]
API_SERVER_ENTITY = "kube-apiserver"
DNS_PORT = 53


def _selector(labels: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    match = {f"k8s:{k}": v for k, v in sorted(labels.items())}
    if namespace is not None:
        match[NAMESPACE_KEY] = namespace
    return {"matchLabels": match} if match else {}


def _port_rule(ports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not ports:
        return []
    entries = []
    for port in ports:
        entry: dict[str, Any] = {"port": str(port["port"]), "protocol": port.get("protocol", "TCP")}
        if "endPort" in port:
            entry["endPort"] = port["endPort"]
        entries.append(entry)
    return [{"ports": entries}]


def fqdn_selectors(names: Sequence[str], patterns: bool) -> list[dict[str, str]]:
    """``matchName`` per name; with ``patterns``, names sharing a parent domain (two or more, the
    parent itself of at least two labels) fold into one ``matchPattern: "*.parent"``."""
    names = sorted(set(names))
    if not patterns:
        return [{"matchName": name} for name in names]
    by_parent: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_parent[name.partition(".")[2]].append(name)
    selectors = []
    for parent, members in sorted(by_parent.items()):
        if len(members) > 1 and parent.count(".") >= 1:
            selectors.append({"matchPattern": f"*.{parent}"})
        else:
            selectors.extend({"matchName": name} for name in members)
    return selectors


class CiliumRenderer:
    """Translates one synthesized NetworkPolicy at a time; ``warnings`` collects what it had to
    weaken (named addresses kept as CIDRs for want of a DNS rule)."""

    def __init__(self, inputs: LearnedInputs, fqdn_patterns: bool) -> None:
        self._node_ips = {ip for addresses in inputs.nodes.values() for ip in addresses}
        self._api_servers = set(inputs.api_servers)
        self._names = inputs.dns_names
        self._patterns = fqdn_patterns
        self.warnings: list[str] = []

    def _host_ip(self, cidr: str) -> str | None:
        network = ipaddress.ip_network(cidr)
        return str(network.network_address) if network.prefixlen == network.max_prefixlen else None

    def _rules(self, rule: Mapping[str, Any], egress: bool, policy_namespace: str, dns_ok: bool,
               is_dns: bool) -> list[dict[str, Any]]:
        """One Cilium rule per kind of peer (Cilium wants endpoints, CIDRs, entities and FQDNs apart)."""
        prefix = "to" if egress else "from"
        endpoints: list[dict[str, Any]] = []
        cidrs: list[dict[str, str]] = []
        entities: list[str] = []
        names: list[str] = []
        for peer in rule.get(prefix, []):
            block = peer.get("ipBlock")
            if block is None:
                ns_labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                namespace = ns_labels.get(METADATA_NAME_LABEL, policy_namespace)
                endpoints.append(_selector((peer.get("podSelector") or {}).get("matchLabels") or {}, namespace))
                continue
            ip = self._host_ip(block["cidr"])
            if ip in self._api_servers:
                if API_SERVER_ENTITY not in entities:
                    entities.append(API_SERVER_ENTITY)
            elif ip in self._node_ips:
                entities.extend(e for e in NODE_ENTITIES if e not in entities)
            elif egress and dns_ok and ip is not None and self._names.get(ip):
                names.extend(self._names[ip])
            else:
                cidrs.append({"cidr": block["cidr"]})
        def to_ports() -> dict[str, Any]:
            """Fresh per rule: shared objects would dump as YAML anchors."""
            ports = _port_rule(rule.get("ports", []))
            if ports and is_dns:  # by number: every edge of the rule is on port 53, named or not
                protocols = sorted({p["protocol"] for p in ports[0]["ports"]}, reverse=True)
                ports[0] = {"ports": [{"port": str(DNS_PORT), "protocol": p} for p in protocols],
                            "rules": {"dns": [{"matchPattern": "*"}]}}
            return {"toPorts": ports} if ports else {}

        rules = []
        for field, peers in ((f"{prefix}Endpoints", endpoints), (f"{prefix}CIDRSet", cidrs),
                             (f"{prefix}Entities", entities)):
            if peers:
                rules.append({field: peers, **to_ports()})
        if names:
            rules.append({"toFQDNs": fqdn_selectors(names, self._patterns), **to_ports()})
        return rules

    def render(self, policy: Mapping[str, Any], evidence: RuleEvidence) -> dict[str, Any]:
        meta = policy["metadata"]
        spec = policy["spec"]
        out: dict[str, Any] = {
            "endpointSelector": _selector((spec.get("podSelector") or {}).get("matchLabels") or {}, None)}
        for direction in spec.get("policyTypes", []):
            field = direction.lower()
            egress = field == "egress"
            rules_in = spec.get(field, [])
            dns_rules = {i for i, edges in enumerate(evidence.get(field, []))
                         if egress and edges and all(_is_dns(behind.edge) for behind in edges)}
            wants_names = egress and any(self._names.get(self._host_ip(p["ipBlock"]["cidr"]) or "")
                                         for r in rules_in for p in r.get("to", []) if "ipBlock" in p)
            if wants_names and not dns_rules:
                self.warnings.append(f"{meta['namespace']}/{meta['name']}: no DNS lookups to a resolver seen, so "
                                     f"its named external addresses stay CIDRs (toFQDNs needs Cilium's DNS proxy)")
            rules = [r for i, rule in enumerate(rules_in)
                     for r in self._rules(rule, egress, meta["namespace"], bool(dns_rules), i in dns_rules)]
            out[field] = rules or [{}]
        return {"apiVersion": API_VERSION, "kind": "CiliumNetworkPolicy", "metadata": dict(meta), "spec": out}


def _is_dns(edge: LearnedEdge) -> bool:
    return edge.port == DNS_PORT and edge.protocol in ("UDP", "TCP")


def to_cilium(policies: Sequence[Mapping[str, Any]], evidence: Mapping[tuple[str, str], RuleEvidence],
              inputs: LearnedInputs, fqdn_patterns: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The CiliumNetworkPolicies and the warnings of the translation."""
    renderer = CiliumRenderer(inputs, fqdn_patterns)
    out = [renderer.render(p, evidence.get((p["metadata"]["namespace"], p["metadata"]["name"]), {}))
           for p in policies]
    return out, renderer.warnings
