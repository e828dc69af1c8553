"""ClusterNetworkPolicy (``policy.networking.k8s.io/v1alpha2``) read into the evaluator's policy model,
as its API text defines it (kubernetes-sigs/network-policy-api, ``apis/v1alpha2/
clusternetworkpolicy_types.go``; https://network-policy-api.sigs.k8s.io/):

- ``tier``: Admin policies are judged before the NetworkPolicies of the namespace, Baseline
  policies after them ("If a given connection wasn't allowed or denied by any of the tiers, the
  default kubernetes policy is applied": allowed). In a tier, lower ``priority`` first; in a policy,
  rules in the order written; the first matching rule decides: Accept, Deny, or Pass (skip the rest of
  the tier, on to the next). A ClusterNetworkPolicy never isolates: no matching rule, no decision.
- ``subject`` and peers: ``namespaces`` (a namespace label selector) or ``pods`` (namespace AND pod
  selectors), pods of every namespace, never host-network pods; egress also ``networks`` (CIDRs,
  matching pod addresses too), ``nodes`` (node addresses; nodes are known here by their
  ``kubernetes.io/hostname`` label only) and ``domainNames`` (the recorded DNS names, ``*`` one or
  more whole labels).
- ``protocols``: ``tcp``/``udp``/``sctp`` ``destinationPort`` ``number`` or ``range``, or
  ``destinationNamedPort``; none given: every port.

v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy (network-policy-api v0.1.x, ``apis/v1alpha1/``),
which v1alpha2 replaced, are read as their v1alpha2 equivalents: an AdminNetworkPolicy is an Admin-tier
policy of its ``priority``, the one BaselineAdminNetworkPolicy (named ``default``) a Baseline-tier
policy; action ``Allow`` is ``Accept``; ``ports`` (``portNumber``, ``portRange`` with a protocol,
default TCP, or ``namedPort``) are ``protocols``. Subjects, peers and the order of judgement are the
same in both versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator.labels import LabelSelector
from netpol_gen.evaluator.policy import (
    PROTOCOLS,
    TIER_ADMIN,
    TIER_BASELINE,
    NamePattern,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
    _network,
    _port_number,
    object_names,
    required_spec,
)
from netpol_gen.model.cluster import Pod

API_VERSION = "policy.networking.k8s.io/v1alpha2"
KIND = "ClusterNetworkPolicy"
V1ALPHA1 = "policy.networking.k8s.io/v1alpha1"
# v1alpha1 kind -> (v1alpha2 tier, key flavor, actions it allows)
V1ALPHA1_KINDS = {"AdminNetworkPolicy": ("Admin", "anp", ("Allow", "Deny", "Pass")),
                  "BaselineAdminNetworkPolicy": ("Baseline", "banp", ("Allow", "Deny"))}
BANP_NAME = "default"
TIERS = {"Admin": TIER_ADMIN, "Baseline": TIER_BASELINE}
ACTIONS = {"Accept": "Allow", "Deny": "Deny", "Pass": "Pass"}


@dataclass(frozen=True, slots=True)
class PodsIn:
    """Pods whose namespace's labels match ``namespaces`` and whose labels match ``pods``."""

    namespaces: LabelSelector
    pods: LabelSelector

    def matches(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool:
        return self.namespaces.matches(namespace_labels) and self.pods.matches(pod.labels)


def _pods_in(raw: Mapping[str, Any], field: str) -> PodsIn:
    namespaces, pods = raw.get("namespaces"), raw.get("pods")
    if (namespaces is None) == (pods is None):
        raise PolicyError(f"{field}: exactly one of namespaces and pods must be set")
    if namespaces is not None:
        return PodsIn(LabelSelector.parse(namespaces, f"{field}.namespaces"), LabelSelector())
    if not isinstance(pods, Mapping) or "podSelector" not in pods:
        raise PolicyError(f"{field}.pods.podSelector is required")
    return PodsIn(LabelSelector.parse(pods.get("namespaceSelector") or {}, f"{field}.pods.namespaceSelector"),
                  LabelSelector.parse(pods["podSelector"], f"{field}.pods.podSelector"))


def _peer(raw: Any, field: str, egress: bool) -> Peer:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    allowed = {"namespaces", "pods", *(("networks", "nodes", "domainNames") if egress else ())}
    present = [k for k in raw if raw[k] is not None]
    if len(present) != 1 or present[0] not in allowed:
        raise PolicyError(f"{field}: exactly one of {', '.join(sorted(allowed))} must be set")
    kind = present[0]
    if kind in ("namespaces", "pods"):
        selector = _pods_in(raw, field)
        return Peer(pod_selector=selector.pods, namespace_selector=selector.namespaces)
    if kind == "networks":
        return Peer(nets=tuple(_network(n, f"{field}.networks[{i}]") for i, n in enumerate(raw["networks"])))
    if kind == "nodes":
        return Peer(nodes=LabelSelector.parse(raw["nodes"], f"{field}.nodes"))
    names = [str(n).rstrip(".").lower() for n in raw["domainNames"]]
    return Peer(fqdns=tuple(NamePattern(n, exact="*" not in n, whole_labels=True) for n in names))


def _ports(raw: Any, field: str) -> tuple[PortSpec, ...]:
    specs: list[PortSpec] = []
    for i, entry in enumerate(raw or []):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise PolicyError(f"{field}[{i}]: exactly one of tcp, udp, sctp, destinationNamedPort must be set")
        (key, value), = entry.items()
        if key == "destinationNamedPort":
            specs.extend(PortSpec(p, str(value)) for p in PROTOCOLS)
            continue
        if key not in ("tcp", "udp", "sctp"):
            raise PolicyError(f"{field}[{i}]: unknown protocol {key!r}")
        port = (value or {}).get("destinationPort") if isinstance(value, Mapping) else None
        where = f"{field}[{i}].{key}.destinationPort"
        if port is None:
            specs.append(PortSpec(key.upper(), None))
        elif not isinstance(port, Mapping):
            raise PolicyError(f"{where}: expected an object with number or range, got {port!r}")
        elif "number" in port:
            specs.append(PortSpec(key.upper(), _port_number(port["number"], f"{where}.number")))
        elif isinstance(port.get("range"), Mapping):
            start = _port_number(port["range"].get("start"), f"{where}.range.start")
            end = _port_number(port["range"].get("end"), f"{where}.range.end")
            if start >= end:
                raise PolicyError(f"{field}[{i}]: range start must be less than end")
            specs.append(PortSpec(key.upper(), start, end))
        else:
            raise PolicyError(f"{where} needs number or range")
    return tuple(specs)


def _rules(raw: Any, field: str, egress: bool) -> tuple[Rule, ...]:
    rules = []
    for i, rule in enumerate(raw or []):
        where = f"{field}[{i}]"
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{where} must be a mapping")
        action = ACTIONS.get(rule.get("action"))  # type: ignore[arg-type]
        if action is None:
            raise PolicyError(f"{where}.action: {rule.get('action')!r} is not one of Accept, Deny, Pass")
        peers_raw = rule.get("to" if egress else "from") or []
        if not peers_raw:
            raise PolicyError(f"{where}.{'to' if egress else 'from'} must hold at least one peer")
        peers = tuple(_peer(p, f"{where}.{'to' if egress else 'from'}[{j}]", egress) for j, p in enumerate(peers_raw))
        if action != "Allow" and any(p.fqdns for p in peers):
            raise PolicyError(f"{where}: domainNames is only supported in Accept rules")
        rules.append(Rule(peers, _ports(rule.get("protocols"), f"{where}.protocols"), action))
    return tuple(rules)


def parse_cluster_network_policy(obj: Mapping[str, Any], *, where: str = "") -> NetworkPolicy:
    name, _namespace = object_names(obj, cluster_wide=True)
    label = f"{KIND} {name}"
    try:
        return _parse(name, required_spec(obj, name), where, "cnp")
    except PolicyError as exc:
        raise PolicyError(exc.what, where=where or None, obj=label) from None


def parse_admin_network_policy(obj: Mapping[str, Any], *, where: str = "") -> NetworkPolicy:
    """A v1alpha1 AdminNetworkPolicy or BaselineAdminNetworkPolicy, read as its v1alpha2 equivalent."""
    name, _namespace = object_names(obj, cluster_wide=True)
    kind = str(obj.get("kind"))
    tier, flavor, actions = V1ALPHA1_KINDS[kind]
    try:
        spec = required_spec(obj, name)
        if tier == "Baseline" and name != BANP_NAME:
            raise PolicyError(f"metadata.name must be {BANP_NAME!r}: a cluster has one {kind}")
        converted = {
            "tier": tier, "priority": spec.get("priority") if tier == "Admin" else 0, "subject": spec.get("subject"),
            **{direction: [_v1alpha1_rule(rule, f"spec.{direction}[{i}]", actions)
                           for i, rule in enumerate(spec.get(direction) or [])]
               for direction in ("ingress", "egress")}}
        return _parse(name, converted, where, flavor)
    except PolicyError as exc:
        raise PolicyError(exc.what, where=where or None, obj=f"{kind} {name}") from None


def _v1alpha1_rule(rule: Any, field: str, actions: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(rule, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    if rule.get("action") not in actions:
        raise PolicyError(f"{field}.action: {rule.get('action')!r} is not one of {', '.join(actions)}")
    converted = {k: v for k, v in rule.items() if k not in ("action", "ports")}
    converted["action"] = "Accept" if rule["action"] == "Allow" else rule["action"]
    if rule.get("ports") is not None:
        converted["protocols"] = [_v1alpha1_port(p, f"{field}.ports[{i}]") for i, p in enumerate(rule["ports"])]
    return converted


def _v1alpha1_port(raw: Any, field: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("portNumber", "portRange", "namedPort"):
        raise PolicyError(f"{field}: exactly one of portNumber, portRange, namedPort must be set")
    (key, value), = raw.items()
    if key == "namedPort":
        return {"destinationNamedPort": value}
    if not isinstance(value, Mapping):
        raise PolicyError(f"{field}.{key} must be a mapping")
    protocol = value.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{field}.{key}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    numbers = ("port",) if key == "portNumber" else ("start", "end")
    for number in numbers:
        port = value.get(number)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise PolicyError(f"{field}.{key}.{number}: {port!r} is not a port number 1-65535")
    destination = ({"number": value["port"]} if key == "portNumber"
                   else {"range": {"start": value["start"], "end": value["end"]}})
    return {protocol.lower(): {"destinationPort": destination}}


def _parse(name: str, spec: Mapping[str, Any], where: str, flavor: str) -> NetworkPolicy:
    """The evaluator's policy of a v1alpha2 ``spec`` (read from v1alpha2, or converted from v1alpha1)."""
    tier = TIERS.get(spec.get("tier"))  # type: ignore[arg-type]
    if tier is None:
        raise PolicyError(f"spec.tier: {spec.get('tier')!r} is not Admin or Baseline")
    priority = spec.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1000:
        raise PolicyError(f"spec.priority: {priority!r} must be an integer 0-1000")
    subject = _pods_in(spec.get("subject") or {}, "spec.subject")
    return NetworkPolicy(
        namespace="", name=name, pod_selector=LabelSelector(), policy_types=frozenset(),
        ingress=_rules(spec.get("ingress"), "spec.ingress", False),
        egress=_rules(spec.get("egress"), "spec.egress", True), source=where, subject=subject,
        cluster_wide=True, stage=(tier, float(priority), name), first_match=True, flavor=flavor,
        rules_without_isolation=True)
