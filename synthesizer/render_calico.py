"""The synthesized policies as Calico ``projectcalico.org/v3`` NetworkPolicies (namespaced), one per
workload: the subject and pod peers in Calico's selector syntax (a peer of another namespace with
``namespaceSelector: projectcalico.org/name == '<ns>'``), nodes and external addresses as ``nets``,
one ``action: Allow`` rule per peer and protocol, and an explicit ``order`` (that of Kubernetes
NetworkPolicies in Calico, so both kinds interleave as a reviewer expects)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netpol_gen.model.cluster import METADATA_NAME_LABEL

API_VERSION = "projectcalico.org/v3"
ORDER = 1000


def selector(labels: Mapping[str, str]) -> str:
    """``k == 'v' && ...`` in key order; ``all()`` for no labels."""
    return " && ".join(f"{k} == '{v}'" for k, v in sorted(labels.items())) or "all()"


def _entity(peer: Mapping[str, Any], policy_namespace: str) -> dict[str, Any]:
    block = peer.get("ipBlock")
    if block is not None:
        return {"nets": [block["cidr"]]}
    entity: dict[str, Any] = {"selector": selector((peer.get("podSelector") or {}).get("matchLabels") or {})}
    namespace = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {}).get(METADATA_NAME_LABEL)
    if namespace is not None and namespace != policy_namespace:
        entity["namespaceSelector"] = f"projectcalico.org/name == '{namespace}'"
    return entity


def _rules(rule: Mapping[str, Any], egress: bool, namespace: str) -> list[dict[str, Any]]:
    by_protocol: dict[str, list[int | str]] = {}
    for port in rule.get("ports", []):
        entry = port["port"] if "endPort" not in port else f"{port['port']}:{port['endPort']}"
        by_protocol.setdefault(port.get("protocol", "TCP"), []).append(entry)
    out = []
    for peer in rule.get("to" if egress else "from", []):
        for protocol, ports in by_protocol.items() or [(None, [])]:
            entity = _entity(peer, namespace)  # fresh per rule: shared objects would dump as YAML anchors
            destination = {**(entity if egress else {}), **({"ports": list(ports)} if ports else {})}
            calico_rule: dict[str, Any] = {"action": "Allow"}
            if protocol is not None:
                calico_rule["protocol"] = protocol
            if not egress:
                calico_rule["source"] = entity
            if destination:
                calico_rule["destination"] = destination
            out.append(calico_rule)
    return out


def to_calico(policies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for policy in policies:
        meta, spec = policy["metadata"], policy["spec"]
        calico: dict[str, Any] = {
            "order": ORDER,
            "selector": selector((spec.get("podSelector") or {}).get("matchLabels") or {}),
            "types": list(spec.get("policyTypes", [])),
        }
        for direction in calico["types"]:
            field = direction.lower()
            calico[field] = [r for rule in spec.get(field, []) for r in _rules(rule, field == "egress",
                                                                                meta["namespace"])]
        out.append({"apiVersion": API_VERSION, "kind": "NetworkPolicy", "metadata": dict(meta), "spec": calico})
    return out
