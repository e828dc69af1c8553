"""Calico ``projectcalico.org/v3`` NetworkPolicy and GlobalNetworkPolicy read into the evaluator's
policy model. Semantics as in Calico's reference
(https://docs.tigera.io/calico/latest/reference/resources/networkpolicy and .../globalnetworkpolicy):

- Policies apply in ascending ``order`` (no order: after every ordered one; ties by name), each its
  own stage; Kubernetes NetworkPolicies sit at order 1000, as Calico places them. In a policy the
  first rule that matches decides: Allow, Deny, or Pass (skip the remaining policies; the
  Kubernetes profile then allows); Log never decides. A pod some policy applies to and no rule
  decided for is denied.
- ``types`` defaults as Calico does: Egress when only egress rules are given, both when both, else Ingress.
- ``selector`` uses Calico's selector syntax over the pod's labels plus ``projectcalico.org/namespace``,
  ``projectcalico.org/orchestrator`` and ``pcns.<key>`` for its namespace's labels; a rule's
  ``selector`` without ``namespaceSelector`` means the policy's namespace (a GlobalNetworkPolicy: any);
  ``namespaceSelector`` matches namespace labels plus ``projectcalico.org/name``. ``nets``/``notNets``
  match the peer address (pods and nodes too), ANDed with the selectors.
- Only the default tier is judged; other tiers, ``notProtocol``, ``notPorts``, ``notSelector``,
  ``serviceAccounts``, ``services``, HTTP match and selectors on the subject's own side of a rule
  are refused, as they would change who is admitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator.calico_selector import Predicate, parse_selector
from netpol_gen.evaluator.cilium import NOTHING
from netpol_gen.evaluator.labels import LabelSelector
from netpol_gen.evaluator.policy import (
    TIER_POLICY,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
    _network,
    object_names,
    required_spec,
)
from netpol_gen.model.cluster import Pod

API_VERSIONS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")
KINDS = {"NetworkPolicy": False, "GlobalNetworkPolicy": True}
NAMESPACE_LABEL = "projectcalico.org/namespace"
NAME_LABEL = "projectcalico.org/name"
PROTOCOL_NUMBERS = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
_REFUSED_ENTITY = ("notSelector", "notPorts", "serviceAccounts", "services")


def calico_labels(pod: Pod) -> dict[str, str]:
    return {**pod.labels, NAMESPACE_LABEL: pod.namespace, "projectcalico.org/orchestrator": "k8s"}


@dataclass(frozen=True)
class CalicoSelector:
    """A selector and a namespace selector (None: ``namespace`` only, or any for global policies)."""

    selector: Predicate
    namespace_selector: Predicate | None
    namespace: str | None

    def matches(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool:
        if self.namespace_selector is not None:
            if not self.namespace_selector({**namespace_labels, NAME_LABEL: pod.namespace}):
                return False
        elif self.namespace is not None and pod.namespace != self.namespace:
            return False
        labels = calico_labels(pod)
        labels.update({f"pcns.{k}": v for k, v in namespace_labels.items()})
        return self.selector(labels)


def _protocol(raw: Any, field: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int) and raw in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[raw]
    if isinstance(raw, str) and raw.upper() in ("TCP", "UDP", "SCTP", "ICMP", "ICMPV6", "UDPLITE"):
        return raw.upper()
    raise PolicyError(f"{field}: protocol {raw!r} is not supported")


def _ports(raw: Any, protocol: str | None, field: str) -> tuple[PortSpec, ...]:
    if not raw:
        return (PortSpec(protocol, None),) if protocol else ()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise PolicyError(f"{field}: ports need protocol TCP, UDP or SCTP")
    specs = []
    for i, entry in enumerate(raw):
        if isinstance(entry, int) or (isinstance(entry, str) and entry.isdigit()):
            specs.append(PortSpec(protocol, int(entry)))
        elif isinstance(entry, str) and ":" in entry:
            first, _, last = entry.partition(":")
            if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
                raise PolicyError(f"{field}[{i}]: {entry!r} is no port range")
            specs.append(PortSpec(protocol, int(first), int(last)))
        elif isinstance(entry, str) and entry:
            specs.append(PortSpec(protocol, entry))
        else:
            raise PolicyError(f"{field}[{i}]: {entry!r} is no port")
    return tuple(specs)


def _peer(raw: Mapping[str, Any], field: str, namespace: str | None) -> Peer | None:
    """The peer of an entity rule, or None when it names none (any peer)."""
    refused = [k for k in _REFUSED_ENTITY if raw.get(k)]
    if refused:
        raise PolicyError(f"{field}: {', '.join(refused)} not supported")
    selector, namespace_selector = raw.get("selector"), raw.get("namespaceSelector")
    nets = tuple(_network(n, f"{field}.nets[{i}]") for i, n in enumerate(raw.get("nets") or []))
    not_nets = tuple(_network(n, f"{field}.notNets[{i}]") for i, n in enumerate(raw.get("notNets") or []))
    endpoint = None
    if selector is not None or namespace_selector is not None:
        endpoint = CalicoSelector(parse_selector(selector, f"{field}.selector"),
                                  None if namespace_selector is None
                                  else parse_selector(namespace_selector, f"{field}.namespaceSelector"),
                                  namespace)
    if endpoint is None and not nets and not not_nets:
        return None
    return Peer(endpoint=endpoint, nets=nets, not_nets=not_nets)


def _rule(raw: Any, field: str, egress: bool, namespace: str | None) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    action = raw.get("action")
    if action not in ("Allow", "Deny", "Pass", "Log"):
        raise PolicyError(f"{field}.action: {action!r} is not one of Allow, Deny, Pass, Log")
    for refused in ("notProtocol", "http", "notICMP", "icmp"):
        if raw.get(refused):
            raise PolicyError(f"{field}.{refused} not supported")
    protocol = _protocol(raw.get("protocol"), f"{field}.protocol")
    peer_side, own_side = ("destination", "source") if egress else ("source", "destination")
    peer_raw = raw.get(peer_side) or {}
    own_raw = raw.get(own_side) or {}
    own_fields = ("selector", "namespaceSelector", "nets", "notNets", *_REFUSED_ENTITY, *(("ports",) if egress else ()))
    if any(own_raw.get(k) for k in own_fields):
        raise PolicyError(f"{field}.{own_side}: matching on the policy's own endpoint is not supported")
    ports = _ports(raw.get("destination", {}).get("ports") if isinstance(raw.get("destination"), Mapping)
                   else None, protocol, f"{field}.destination.ports")
    peer = _peer(peer_raw, f"{field}.{peer_side}", namespace)
    if action == "Log":
        return Rule((NOTHING,), (), "Allow")  # logs, never decides
    return Rule((peer,) if peer is not None else (), ports, action)


def _types(spec: Mapping[str, Any]) -> frozenset[str]:
    raw = spec.get("types")
    if raw:
        if any(t not in ("Ingress", "Egress") for t in raw):
            raise PolicyError(f"spec.types: {raw!r} may hold only Ingress and Egress")
        return frozenset(raw)
    if spec.get("egress") and not spec.get("ingress"):
        return frozenset({"Egress"})
    if spec.get("egress"):
        return frozenset({"Ingress", "Egress"})
    return frozenset({"Ingress"})


def parse_calico(obj: Mapping[str, Any], *, where: str = "", default_namespace: str = "default") -> NetworkPolicy:
    kind = str(obj.get("kind"))
    cluster_wide = KINDS[kind]
    name, namespace = object_names(obj, cluster_wide=cluster_wide, default_namespace=default_namespace)
    label = f"Calico {kind} {name if cluster_wide else namespace + '/' + name}"
    try:
        spec = required_spec(obj, name)
        tier = spec.get("tier") or "default"
        if tier != "default":
            raise PolicyError(f"spec.tier {tier!r}: only the default tier is supported")
        for flag in ("doNotTrack", "preDNAT", "applyOnForward"):
            if spec.get(flag):
                raise PolicyError(f"spec.{flag} is not supported")
        if spec.get("serviceAccountSelector"):
            raise PolicyError("spec.serviceAccountSelector is not supported")
        scope = None if cluster_wide else namespace
        subject = CalicoSelector(
            parse_selector(spec.get("selector"), "spec.selector"),
            parse_selector(spec["namespaceSelector"], "spec.namespaceSelector")
            if cluster_wide and spec.get("namespaceSelector") else None,
            scope)
        order = spec.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            raise PolicyError(f"spec.order: {order!r} is not a number")
        rules = {d: tuple(_rule(r, f"spec.{d}[{i}]", d == "egress", scope) for i, r in enumerate(spec.get(d) or []))
                 for d in ("ingress", "egress")}
        return NetworkPolicy(
            namespace=namespace, name=name, pod_selector=LabelSelector(), policy_types=_types(spec),
            ingress=rules["ingress"], egress=rules["egress"], source=where, subject=subject,
            cluster_wide=cluster_wide, stage=(TIER_POLICY, math.inf if order is None else float(order), label),
            first_match=True, flavor="calico")
    except PolicyError as exc:
        raise PolicyError(exc.what, where=where or None, obj=label) from None
