"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (``cilium.io/v2``), L3/L4, read into the
evaluator's policy model. Semantics as documented upstream
(https://docs.cilium.io/en/stable/security/policy/language/):

- ``endpointSelector`` and ``from/toEndpoints`` select pods by their labels (``k8s:``/``any:``
  prefixes accepted), ``io.kubernetes.pod.namespace`` and ``io.cilium.k8s.namespace.labels.<key>``;
  in a namespaced policy a selector without the namespace label is limited to the policy's namespace.
- A direction is enforced (default deny) when some selecting policy has a non-empty ``ingress``/
  ``ingressDeny`` (``egress``/``egressDeny``) list, unless ``enableDefaultDeny`` says false for it.
- A rule's L3 peers (endpoints, CIDR/CIDRSet with ``except``, entities, ``toFQDNs``) are ORed and ANDed
  with ``toPorts``; a rule with ports and no L3 peer admits every peer; an empty rule ``{}`` admits none.
  CIDR rules select only addresses outside the cluster; ``toFQDNs`` the addresses whose recorded DNS
  answers named a matching name at the flow's time.
- Deny sections win over every allow.

What is not judged is named in the policy's ``notes`` (reported once): L7 rules (``rules.http``,
``kafka``, ``l7``) are judged at L4 (Cilium admits the connection, then filters requests), DNS
rules other than ``matchPattern: "*"`` likewise, ``icmps`` and ``authentication`` are ignored. The entity
``kube-apiserver`` matches the addresses the ``default/kubernetes`` Service's EndpointSlices name (kept
by the store from every cluster view); with none known it matches nothing. Rule kinds that
would change who is admitted and that cannot be judged (``toServices``, ``toGroups``, ``toRequires``,
``fromNodes``, node selectors, ``specs``) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator.labels import LabelSelector
from netpol_gen.evaluator.policy import (
    PROTOCOLS,
    IPBlock,
    NamePattern,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
    _ip_block,
    _network,
    object_names,
)
from netpol_gen.model.cluster import Pod

API_VERSION = "cilium.io/v2"
KINDS = {"CiliumNetworkPolicy": False, "CiliumClusterwideNetworkPolicy": True}  # kind -> cluster-wide
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
ENTITIES = frozenset({"all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "remote-node",
                      "kube-apiserver", "health", "init", "ingress", "unmanaged", "none"})
NOTHING = Peer(entities=frozenset({"none"}))  # the peer of an empty rule: admits no one
_REFUSED = ("toServices", "toGroups", "toRequires", "fromRequires", "fromGroups", "toNodes", "fromNodes")
_L7 = ("http", "kafka", "l7")


@dataclass(frozen=True, slots=True)
class CiliumSelector:
    """An endpoint selector over a pod's Cilium labels; ``namespace`` limits it to one namespace."""

    selector: LabelSelector
    namespace: str | None

    def matches(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool:
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        labels = {**pod.labels, NAMESPACE_LABEL: pod.namespace,
                  **{NAMESPACE_LABELS_PREFIX + k: v for k, v in namespace_labels.items()}}
        return self.selector.matches(labels)


def _strip(key: Any) -> Any:
    if isinstance(key, str):
        for prefix in ("k8s:", "any:"):
            if key.startswith(prefix):
                return key[len(prefix):]
    return key


def _selector(raw: Any, field: str, namespace: str | None) -> tuple[CiliumSelector | None, frozenset[str]]:
    """The selector, or (for ``reserved:`` labels) the entities it stands for."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    labels = dict(raw.get("matchLabels") or {})
    reserved = frozenset(k.split(":", 1)[1] for k in labels if isinstance(k, str) and k.startswith("reserved:"))
    if reserved:
        return None, reserved
    expressions = [{**e, "key": _strip(e.get("key"))} if isinstance(e, Mapping) else e
                   for e in raw.get("matchExpressions") or []]
    parsed = LabelSelector.parse({"matchLabels": {_strip(k): v for k, v in labels.items()},
                                  "matchExpressions": expressions}, field)
    scoped = namespace if all(r.key != NAMESPACE_LABEL for r in parsed.requirements) else None
    return CiliumSelector(parsed, scoped), frozenset()


def _ports(raw: Any, field: str, notes: list[str], where: str) -> tuple[PortSpec, ...]:
    specs: list[PortSpec] = []
    for i, port_rule in enumerate(raw or []):
        if not isinstance(port_rule, Mapping):
            raise PolicyError(f"{field}[{i}] must be a mapping")
        rules = port_rule.get("rules") or {}
        for kind in _L7:
            if rules.get(kind):
                notes.append(f"{where}: L7 rules.{kind} judged at L4 only (the port is allowed, requests are "
                             f"not checked)")
        dns = rules.get("dns") or []
        if any(entry != {"matchPattern": "*"} for entry in dns):
            notes.append(f"{where}: rules.dns judged at L4 only (DNS queries are not checked)")
        entries = port_rule.get("ports") or [{}]
        for j, entry in enumerate(entries):
            specs.extend(_port(entry, f"{field}[{i}].ports[{j}]"))
    return tuple(specs)


def _port(raw: Any, field: str) -> list[PortSpec]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    protocol = raw.get("protocol") or "ANY"
    if protocol not in (*PROTOCOLS, "ANY"):
        raise PolicyError(f"{field}.protocol: {protocol!r} is not one of TCP, UDP, SCTP, ANY")
    port_raw = raw.get("port")
    port: int | str | None
    if port_raw in (None, "", "0", 0):
        port = None
    elif isinstance(port_raw, int) or (isinstance(port_raw, str) and port_raw.isdigit()):
        port = int(port_raw)
        if not 1 <= port <= 65535:
            raise PolicyError(f"{field}.port: {port_raw!r} must be between 1 and 65535")
    elif isinstance(port_raw, str):
        port = port_raw.lower()  # a named container port
    else:
        raise PolicyError(f"{field}.port: {port_raw!r} is no port")
    end = raw.get("endPort")
    end_port = int(end) if end and isinstance(port, int) and int(end) > port else None
    protocols = PROTOCOLS if protocol == "ANY" else (protocol,)
    return [PortSpec(p, port, end_port) for p in protocols]


def _cidrs(rule: Mapping[str, Any], prefix: str, field: str) -> list[Peer]:
    peers = [Peer(ip_block=IPBlock(_network(c, f"{field}.{prefix}CIDR")), world_only=True)
             for c in rule.get(f"{prefix}CIDR") or []]
    for i, entry in enumerate(rule.get(f"{prefix}CIDRSet") or []):
        if isinstance(entry, Mapping) and entry.get("cidrGroupRef"):
            raise PolicyError(f"{field}.{prefix}CIDRSet[{i}].cidrGroupRef is not supported")
        peers.append(Peer(ip_block=_ip_block(entry, f"{field}.{prefix}CIDRSet[{i}]"), world_only=True))
    return peers


def _rule(raw: Any, field: str, egress: bool, action: str, namespace: str | None, notes: list[str],
          where: str) -> Rule:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    prefix = "to" if egress else "from"
    refused = [k for k in _REFUSED if raw.get(k)]
    if refused:
        raise PolicyError(f"{field}: {', '.join(refused)} not supported")
    for ignored in ("icmps", "authentication"):
        if raw.get(ignored):
            notes.append(f"{where}: {ignored} ignored")
    peers: list[Peer] = []
    for i, sel in enumerate(raw.get(f"{prefix}Endpoints") or []):
        selector, reserved = _selector(sel, f"{field}.{prefix}Endpoints[{i}]", namespace)
        peers.append(Peer(endpoint=selector) if selector is not None else Peer(entities=reserved))
    peers.extend(_cidrs(raw, prefix, field))
    entities = raw.get(f"{prefix}Entities") or []
    unknown = sorted(set(entities) - ENTITIES)
    if unknown:
        raise PolicyError(f"{field}.{prefix}Entities: unknown entit{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(unknown)}")
    if entities:
        peers.append(Peer(entities=frozenset(entities)))
    if egress:
        patterns = []
        for i, entry in enumerate(raw.get("toFQDNs") or []):
            if not isinstance(entry, Mapping) or not (entry.get("matchName") or entry.get("matchPattern")):
                raise PolicyError(f"{field}.toFQDNs[{i}] needs matchName or matchPattern")
            name = entry.get("matchName")
            text = str(name or entry.get("matchPattern")).rstrip(".").lower()
            patterns.append(NamePattern(text, exact=bool(name)))
        if patterns:
            peers.append(Peer(fqdns=tuple(patterns)))
    ports = _ports(raw.get("toPorts"), f"{field}.toPorts", notes, where)
    if not peers and not ports:
        peers.append(NOTHING)  # `{}`: Cilium's documented default-deny rule
    return Rule(tuple(peers), ports, action)


def parse_cilium(obj: Mapping[str, Any], *, where: str = "", default_namespace: str = "default") -> NetworkPolicy:
    kind = str(obj.get("kind"))
    cluster_wide = KINDS[kind]
    name, namespace = object_names(obj, cluster_wide=cluster_wide, default_namespace=default_namespace)
    label = f"{kind} {name if cluster_wide else namespace + '/' + name}"
    try:
        if obj.get("apiVersion") != API_VERSION:
            raise PolicyError(f"apiVersion {obj.get('apiVersion')!r} is not {API_VERSION}")
        if not name:
            raise PolicyError("metadata.name is required")
        if obj.get("specs"):
            raise PolicyError("specs (several rules in one object) is not supported: one spec per object")
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise PolicyError("spec is required")
        if spec.get("nodeSelector") is not None:
            raise PolicyError("spec.nodeSelector (host policies) is not supported")
        scope = None if cluster_wide else namespace
        subject, reserved = _selector(spec.get("endpointSelector"), "spec.endpointSelector", scope)
        if subject is None:
            raise PolicyError(f"spec.endpointSelector: reserved identities {sorted(reserved)} are not supported")
        notes: list[str] = []
        default_deny = spec.get("enableDefaultDeny") or {}
        rules: dict[str, tuple[Rule, ...]] = {}
        types = set()
        for direction, egress in (("Ingress", False), ("Egress", True)):
            allow_raw = spec.get(direction.lower()) or []
            deny_raw = spec.get(f"{direction.lower()}Deny") or []
            field = f"spec.{direction.lower()}"
            rules[direction] = (
                *(_rule(r, f"{field}[{i}]", egress, "Allow", scope, notes, label) for i, r in enumerate(allow_raw)),
                *(_rule(r, f"{field}Deny[{i}]", egress, "Deny", scope, notes, label) for i, r in enumerate(deny_raw)),
            )
            if (allow_raw or deny_raw) and default_deny.get(direction.lower(), True) is not False:
                types.add(direction)
        return NetworkPolicy(
            namespace=namespace, name=name, pod_selector=LabelSelector(), policy_types=frozenset(types),
            ingress=rules["Ingress"], egress=rules["Egress"], source=where, subject=subject,
            cluster_wide=cluster_wide, flavor="cilium", notes=tuple(dict.fromkeys(notes)),
            rules_without_isolation=True)
    except PolicyError as exc:
        raise PolicyError(exc.what, where=where or None, obj=label) from None
