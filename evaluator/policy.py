"""NetworkPolicy (networking.k8s.io/v1) parsed into immutable objects and validated as the API
server validates it (``ValidateNetworkPolicy``), so a policy we accept is one ``kubectl apply`` accepts.

Defaulting also follows the API server: ``policyTypes`` absent means Ingress, plus Egress when the
egress list is non-empty; a port's protocol defaults to TCP.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator.labels import LabelSelector
from netpol_gen.model.cluster import Pod

PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        if address.version != self.cidr.version or address not in self.cidr:
            return False
        return not any(address in ex for ex in self.excepts)


class EndpointMatcher(Protocol):
    """A CNI's own selector (Cilium endpoint selector, Calico selector expression) over a pod as
    that CNI labels it: its labels plus what it derives from the pod's namespace."""

    def matches(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class NamePattern:
    """A Cilium ``toFQDNs`` entry: ``matchName`` (exact) or ``matchPattern`` (``*`` within a label,
    ``*`` alone: every name), matched case-insensitively against the names an address answered for."""

    pattern: str
    exact: bool
    whole_labels: bool = False  # ClusterNetworkPolicy domainNames: ``*`` is one or more entire labels

    def matches(self, names: frozenset[str]) -> bool:
        if self.exact:
            return self.pattern in names
        if self.pattern == "*":
            return bool(names)
        regex = _name_regex(self.pattern, self.whole_labels)
        return any(regex.match(name) for name in names)


@lru_cache(maxsize=1024)
def _name_regex(pattern: str, whole_labels: bool) -> re.Pattern[str]:
    wildcard = r"[-a-z0-9_]+(\.[-a-z0-9_]+)*" if whole_labels else "[-a-z0-9_]*"
    return re.compile("^" + re.escape(pattern).replace(r"\*", wildcard) + "$")


@dataclass(frozen=True, slots=True)
class Peer:
    """One ``from``/``to`` entry. NetworkPolicy: selectors (ANDed when both given) or an ipBlock.
    The CNI front-ends add: ``endpoint`` (their selectors), ``nets``/``not_nets`` (Calico, ANDed with
    ``endpoint``), ``entities`` and ``fqdns`` (Cilium); ``world_only`` makes an ipBlock match only
    addresses outside the cluster, as Cilium's CIDR rules do."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None
    endpoint: EndpointMatcher | None = None
    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    entities: frozenset[str] = frozenset()
    fqdns: tuple[NamePattern, ...] = ()
    world_only: bool = False
    nodes: LabelSelector | None = None  # ClusterNetworkPolicy: node addresses, nodes by label

    @property
    def generic(self) -> bool:
        """A Calico-style conjunction of an endpoint matcher and address sets."""
        return self.endpoint is not None or bool(self.nets) or bool(self.not_nets)

    def address_blocks(self) -> tuple[IPBlock, ...]:
        """The address sets this peer tests (for grouping addresses the peer cannot tell apart)."""
        return ((self.ip_block,) if self.ip_block is not None else ()) + tuple(
            IPBlock(net) for net in (*self.nets, *self.not_nets))


@dataclass(frozen=True, slots=True)
class PortSpec:
    """``port`` None means every port of ``protocol``; a str is a named container port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """An ingress or egress rule. Empty ``peers`` means every peer, empty ``ports`` every port.
    ``action`` is Allow for NetworkPolicy; Deny (Cilium deny sections, Calico) or Pass (Calico)."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    action: str = "Allow"


# tiers (ClusterNetworkPolicy): Admin before the namespaces' policies before Baseline
TIER_ADMIN, TIER_POLICY, TIER_BASELINE = 0, 1, 2
UNION_STAGE = (TIER_POLICY, 1000.0, "")  # NetworkPolicy and Cilium: one stage, rules united; Calico's order of NP


@dataclass(frozen=True, eq=False)
class NetworkPolicy:
    """The evaluator's policy model, which every front-end produces (see :mod:`.frontends`).

    NetworkPolicy fills the first fields. A CNI front-end may add: ``subject`` (its own selector,
    replacing ``pod_selector``), ``cluster_wide`` (selects pods of every namespace), ``stage`` (the
    precedence: policies of one stage are judged together, stages in ascending order; Calico's
    ``order``), ``first_match`` (the first matching rule decides, as in Calico), ``flavor`` (a prefix
    of the key, so a Cilium policy and a NetworkPolicy of the same name stay apart) and ``notes``
    (what the evaluator does not judge, reported once)."""

    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    source: str = ""  # where it was read, "file:doc N"
    subject: EndpointMatcher | None = None
    cluster_wide: bool = False
    stage: tuple[int, float, str] = UNION_STAGE
    first_match: bool = False
    flavor: str = ""
    notes: tuple[str, ...] = ()
    rules_without_isolation: bool = False  # Cilium's enableDefaultDeny false: rules count, no isolation

    def applies(self, direction: str) -> bool:
        """Whether the policy's rules of ``direction`` are judged for the pods it selects."""
        return direction in self.policy_types or (self.rules_without_isolation and bool(self.rules(direction)))

    @property
    def key(self) -> str:
        name = self.name if self.cluster_wide else f"{self.namespace}/{self.name}"
        return f"{self.flavor}:{name}" if self.flavor else name

    def selects(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool:
        if self.subject is not None:
            return self.subject.matches(pod, namespace_labels)
        return self.pod_selector.matches(pod.labels)

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == "Ingress" else self.egress


def object_names(obj: Mapping[str, Any], *, cluster_wide: bool = False,
                 default_namespace: str = "default") -> tuple[str, str]:
    """A CNI policy object's ``metadata.name`` and namespace ("" when cluster-wide or absent), read
    leniently so that every front-end can label its errors before it validates anything."""
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    name = str(meta.get("name") or "")
    return name, "" if cluster_wide else str(meta.get("namespace") or default_namespace)


def required_spec(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The object's ``spec``, after checking it has a name and a spec (what every kind requires)."""
    if not name:
        raise PolicyError("metadata.name is required")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise PolicyError("spec is required")
    return spec


@lru_cache(maxsize=1 << 16)
def _parse_network(raw: str) -> IPNetwork:
    """``ipaddress.ip_network`` of a CIDR, memoised: a generated set repeats the same /32s in many
    policies (every workload that reached an address), and the networks are immutable values."""
    return ipaddress.ip_network(raw, strict=False)


def _network(raw: Any, field: str) -> IPNetwork:
    if not isinstance(raw, str) or "/" not in raw:
        raise PolicyError(f"{field}: {raw!r} is not a CIDR (address/prefix)")
    try:
        return _parse_network(raw)
    except ValueError:
        raise PolicyError(f"{field}: {raw!r} is not a valid CIDR") from None


def _ip_block(raw: Any, field: str) -> IPBlock:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    if "cidr" not in raw:
        raise PolicyError(f"{field}.cidr is required")
    cidr = _network(raw["cidr"], f"{field}.cidr")
    excepts = []
    for i, ex_raw in enumerate(raw.get("except") or []):
        ex = _network(ex_raw, f"{field}.except[{i}]")
        if ex.version != cidr.version or not ex.subnet_of(cidr) or ex.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            raise PolicyError(f"{field}.except[{i}]: {ex_raw} must be strictly within cidr {raw['cidr']}")
        excepts.append(ex)
    return IPBlock(cidr, tuple(excepts))


def parse_peer(raw: Any, field: str) -> Peer:
    """One ``from``/``to`` entry, validated; errors name ``field`` (the synthesizer proves folds with it)."""
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    unknown = set(raw) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        raise PolicyError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}")
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if raw.get(k) is not None]
    if not present:
        raise PolicyError(f"{field}: must specify a peer (podSelector, namespaceSelector or ipBlock)")
    if "ipBlock" in present and len(present) > 1:
        raise PolicyError(f"{field}: may not specify both ipBlock and another peer")
    if "ipBlock" in present:
        return Peer(ip_block=_ip_block(raw["ipBlock"], f"{field}.ipBlock"))
    return Peer(
        pod_selector=LabelSelector.parse(raw["podSelector"], f"{field}.podSelector")
        if raw.get("podSelector") is not None
        else None,
        namespace_selector=LabelSelector.parse(raw["namespaceSelector"], f"{field}.namespaceSelector")
        if raw.get("namespaceSelector") is not None
        else None,
    )


def _port_number(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PolicyError(f"{field}: {value!r} must be between 1 and 65535")
    return value


def _port(raw: Any, field: str) -> PortSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be a mapping")
    unknown = set(raw) - {"protocol", "port", "endPort"}
    if unknown:
        raise PolicyError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}")
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{field}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    port = raw.get("port")
    end_port = raw.get("endPort")
    if isinstance(port, str):
        if len(port) > 15 or not _PORT_NAME.match(port) or "--" in port or not re.search("[a-z]", port):
            # a quoted number ("80") is a string in IntOrString, so the API server rejects it as a name
            raise PolicyError(f"{field}.port: {port!r} is not a valid port name (IANA_SVC_NAME)")
        if end_port is not None:
            raise PolicyError(f"{field}.endPort may not be specified when port is a named port ({port!r})")
    elif port is not None:
        port = _port_number(port, f"{field}.port")
    if end_port is not None:
        if port is None:
            raise PolicyError(f"{field}.endPort may not be specified without port")
        end_port = _port_number(end_port, f"{field}.endPort")
        if isinstance(port, int) and end_port < port:
            raise PolicyError(f"{field}.endPort ({end_port}) must be greater than or equal to port ({port})")
    return PortSpec(protocol=str(protocol), port=port, end_port=end_port)


def _rules(raw: Any, field: str, peer_key: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError(f"{field} must be a list")
    rules = []
    for i, rule in enumerate(raw):
        rule = rule if rule is not None else {}
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{field}[{i}] must be a mapping")
        unknown = set(rule) - {peer_key, "ports"}
        if unknown:
            raise PolicyError(f"{field}[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
        peers_raw = rule.get(peer_key) or []
        ports_raw = rule.get("ports") or []
        if not isinstance(peers_raw, list) or not isinstance(ports_raw, list):
            raise PolicyError(f"{field}[{i}]: {peer_key} and ports must be lists")
        peers = tuple(parse_peer(p, f"{field}[{i}].{peer_key}[{j}]") for j, p in enumerate(peers_raw))
        ports = tuple(_port(p, f"{field}[{i}].ports[{j}]") for j, p in enumerate(ports_raw))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _policy_types(spec: Mapping[str, Any], has_egress: bool) -> frozenset[str]:
    raw = spec.get("policyTypes")
    if raw is None or raw == []:
        return frozenset({"Ingress", "Egress"} if has_egress else {"Ingress"})
    if not isinstance(raw, list):
        raise PolicyError("spec.policyTypes must be a list")
    if len(raw) > len(POLICY_TYPES):  # the API server counts entries: a repeated type is accepted
        raise PolicyError("spec.policyTypes may not specify more than two policyTypes")
    for value in raw:
        if value not in POLICY_TYPES:
            raise PolicyError(f"spec.policyTypes: {value!r} is not one of Ingress, Egress")
    return frozenset(raw)


def parse_policy(obj: Mapping[str, Any], *, where: str = "", default_namespace: str = "default") -> NetworkPolicy:
    """Parse one NetworkPolicy object; PolicyError says ``where: policy ns/name: what is wrong``."""
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    name = meta.get("name")
    namespace = meta.get("namespace") or default_namespace
    label = f"policy {namespace}/{name or '<unnamed>'}"
    try:
        api_version = obj.get("apiVersion")
        if obj.get("kind") != "NetworkPolicy" or api_version not in ("networking.k8s.io/v1", None):
            raise PolicyError(f"not a networking.k8s.io/v1 NetworkPolicy (kind {obj.get('kind')!r}, "
                              f"apiVersion {api_version!r})")
        if not name:
            raise PolicyError("metadata.name is required")
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise PolicyError(f"metadata.name {name!r} is not a valid DNS subdomain name")
        if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace):
            raise PolicyError(f"metadata.namespace {namespace!r} is not a valid DNS label")
        for field in ("labels", "annotations"):  # the API server's map[string]string
            values = meta.get(field) or {}
            if not isinstance(values, Mapping) or not all(
                    isinstance(key, str) and isinstance(value, str) for key, value in values.items()):
                raise PolicyError(f"metadata.{field} must map strings to strings")
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise PolicyError("spec is required")
        unknown = set(spec) - {"podSelector", "ingress", "egress", "policyTypes"}
        if unknown:
            raise PolicyError(f"spec: unknown field(s) {', '.join(sorted(unknown))}")
        ingress = _rules(spec.get("ingress"), "spec.ingress", "from")
        egress = _rules(spec.get("egress"), "spec.egress", "to")
        return NetworkPolicy(
            namespace=namespace,
            name=name,
            pod_selector=LabelSelector.parse(spec.get("podSelector"), "spec.podSelector"),
            policy_types=_policy_types(spec, bool(egress)),
            ingress=ingress,
            egress=egress,
            source=where,
        )
    except PolicyError as exc:
        raise PolicyError(exc.what, where=where or None, obj=label) from None
