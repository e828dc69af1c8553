"""The evaluator: NetworkPolicy semantics, compiled once and cached, the one place in netpol-gen
that matches selectors, peers and ports.

A connection is allowed iff the source's egress and the destination's ingress both allow it. A side
is judged only when its endpoint is a pod; a pod may always talk to itself and to and from the node
it runs on (the API reference's two exceptions); a pod is isolated for a direction iff some policy of its
namespace selects it with that direction in policyTypes, and then the union of those policies' rules
decides.

Cilium and Calico policies arrive in the same model (see :mod:`.frontends`), so one walk decides for
all: the policies that select the pod for the direction are judged in stages of ascending
``stage`` (NetworkPolicy and Cilium share one stage; each Calico policy is its own, by ``order``). In a
stage a matching Deny rule wins over any Allow (Cilium's deny precedence), else a matching Allow
admits; in a ``first_match`` policy (Calico) the first matching rule decides, and Pass ends the walk
to the next tier. Tiers (ClusterNetworkPolicy): Admin, then the policies of the namespace
(NetworkPolicy, Cilium, Calico), then Baseline; in the middle tier, no rule deciding on a pod some
policy isolates denies it; nothing deciding at all allows (after a Pass, as passed).

Policies are indexed by namespace, the policies isolating each pod are computed once per pod, and
verdicts are cached per (source, destination, port, protocol), and their sides per pair of ends alike
(what a side can see of each end, :meth:`Evaluator._end_class`), so judging a million flows is a
dictionary lookup per flow once the distinct connections have been seen, and a new connection between
ends alike to known ones is a few lookups, not a judgement.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from itertools import groupby

from netpol_gen.evaluator.addresses import AddressClasses
from netpol_gen.evaluator.policy import TIER_POLICY, NetworkPolicy, Peer, PortSpec, Rule
from netpol_gen.evaluator.verdict import Basis, FlowVerdict, Judged, RuleRef, SideVerdict, Verdict
from netpol_gen.model.cluster import Cluster, Endpoint, EndpointKind, Pod, ServiceTarget, remember
from netpol_gen.model.flows import Flow

INGRESS, EGRESS = "Ingress", "Egress"
HOSTNAME_LABEL = "kubernetes.io/hostname"  # the one node label a snapshot's nodes are known by here
# Cilium's entities, as the ends the evaluator knows: "host" is the pod's own node (always allowed
# before policies are asked), "kube-apiserver" the addresses default/kubernetes's EndpointSlices name
_WORLD = (EndpointKind.EXTERNAL, EndpointKind.UNKNOWN_CLUSTER_IP)
# the side verdicts no policy takes part in, one object each: shared, they are encoded and tallied
# once per run (by identity) rather than once per connection
_FIXED = {(direction, basis): SideVerdict(direction, basis) for direction in ("Ingress", "Egress")
          for basis in (Basis.NOT_A_POD, Basis.SAME_POD, Basis.OWN_NODE, Basis.NOT_ISOLATED)}


def entity_matches(entity: str, subject: Pod, other: Endpoint) -> bool:
    if entity == "all":
        return True
    if entity in ("world", "world-ipv4", "world-ipv6"):
        family = {"world-ipv4": 4, "world-ipv6": 6}.get(entity)
        return other.kind in _WORLD and (family is None or _address(other.ip).version == family)
    if entity == "cluster":
        return other.kind not in _WORLD
    if entity == "host":
        return other.node is not None and other.node.name == subject.node_name
    if entity == "remote-node":
        return other.node is not None and other.node.name != subject.node_name
    return entity == "kube-apiserver" and other.api_server


@dataclasses.dataclass(frozen=True, slots=True)
class _RulePeers:
    """A rule's peers as matching takes them: the ipBlocks as indices of the evaluator's
    :class:`AddressClasses` (``world_blocks``: Cilium's CIDR rules, for ends outside the cluster only),
    so whether any of them contains the other end's address is one set test on that address's class
    however many blocks the rule lists; the other peers are matched one by one."""

    blocks: frozenset[int]
    world_blocks: frozenset[int]
    others: tuple[Peer, ...]


@lru_cache(maxsize=65536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


def port_matches(spec: PortSpec, port: int, protocol: str, dst_pod: Pod | None) -> bool:
    """Whether a rule's port entry admits ``port``/``protocol`` on the destination.

    A named port is looked up on the destination pod's container ports (same protocol); when the
    destination is not a pod the name resolves to nothing and matches nothing."""
    if spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, str):
        return dst_pod is not None and dst_pod.named_port(spec.port, protocol) == port
    if spec.end_port is not None:
        return spec.port <= port <= spec.end_port
    return spec.port == port


class Evaluator:
    """Judge connections and flows against a set of NetworkPolicies on a cluster."""

    def __init__(self, cluster: Cluster, policies: Iterable[NetworkPolicy]) -> None:
        self.cluster = cluster
        self.policies = list(policies)
        self._by_namespace: dict[str, list[NetworkPolicy]] = defaultdict(list)
        self._cluster_wide: list[NetworkPolicy] = []
        for policy in self.policies:
            if policy.cluster_wide:
                self._cluster_wide.append(policy)
            else:
                self._by_namespace[policy.namespace].append(policy)
        self._isolating: dict[tuple[int, str], tuple[NetworkPolicy, ...]] = {}
        self._applying: dict[tuple[int, str], tuple[NetworkPolicy, ...]] = {}
        self._subjects: dict[tuple[int, str], tuple[tuple[NetworkPolicy, ...], bool, bool, int]] = {}
        self._label_keys: dict[int, tuple[int, int]] = {}  # by id: the cluster holds its pods
        self._interned: dict[object, int] = {}
        self._sides: dict[tuple[object, ...], SideVerdict] = {}
        self._looks_cache: dict[tuple[int, str], tuple[bool, bool]] = {}
        self._verdicts: dict[tuple[object, ...], Verdict] = {}
        # judgements of connections whose ends are alike (_alike_key), and of a Service's backends from
        # a source alike (by id of the target: it is kept in the value, so the id stays its own)
        self._alike: dict[tuple[object, ...], tuple[Judged]] = {}
        self._end_classes: dict[int, tuple[Endpoint, tuple[object, ...]]] = {}  # by id, the end kept
        self._alike_backends: dict[tuple[object, ...], tuple[ServiceTarget, tuple[Judged, ...]]] = {}
        self._backend_ends: dict[tuple[int, str], Endpoint] = {}
        self.addresses = AddressClasses(
            block for policy in self.policies for direction in (INGRESS, EGRESS)
            for rule in policy.rules(direction) for peer in rule.peers for block in peer.address_blocks())
        self._rule_peers: dict[int, _RulePeers] = {}  # by id: the policies hold their rules

    # --- isolation ------------------------------------------------------------------------------

    def applying(self, pod: Pod, direction: str) -> tuple[NetworkPolicy, ...]:
        """The policies that select ``pod`` and whose rules for ``direction`` are judged, in the order
        they are judged (by stage)."""
        key = (id(pod), direction)
        found = self._applying.get(key)
        if found is None:
            labels = self.cluster.namespace_labels(pod.namespace)
            candidates = (*self._by_namespace.get(pod.namespace, ()), *self._cluster_wide)
            found = tuple(sorted(
                (policy for policy in candidates
                 if policy.applies(direction) and policy.selects(pod, labels)),
                key=lambda policy: policy.stage))
            self._applying[key] = found
        return found

    def isolating(self, pod: Pod, direction: str) -> tuple[NetworkPolicy, ...]:
        """The policies that select ``pod`` for ``direction`` ("Ingress" or "Egress")."""
        key = (id(pod), direction)
        found = self._isolating.get(key)
        if found is None:
            found = self._isolating[key] = tuple(
                policy for policy in self.applying(pod, direction) if direction in policy.policy_types)
        return found

    # --- matching -------------------------------------------------------------------------------

    def peer_matches(self, peer: Peer, policy_namespace: str, other: Endpoint, subject: Pod | None = None) -> bool:
        if peer.ip_block is not None:
            if peer.world_only and other.kind not in _WORLD:
                return False  # Cilium: CIDR rules never select pods or nodes
            return peer.ip_block.contains(_address(other.ip))
        if peer.entities:
            return subject is not None and any(entity_matches(e, subject, other) for e in peer.entities)
        if peer.nodes is not None:
            return other.node is not None and peer.nodes.matches({HOSTNAME_LABEL: other.node.name})
        if peer.fqdns:
            return other.kind in _WORLD and any(p.matches(other.names) for p in peer.fqdns)
        if peer.generic:
            return self._generic_matches(peer, other)
        pod = other.pod
        if pod is None:
            return False  # selectors select pods only; nodes and external IPs need an ipBlock
        if peer.namespace_selector is None:
            namespace_ok = pod.namespace == policy_namespace
        else:
            namespace_ok = peer.namespace_selector.matches(self.cluster.namespace_labels(pod.namespace))
        if not namespace_ok:
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)

    def _generic_matches(self, peer: Peer, other: Endpoint) -> bool:
        """Calico's entity rule: the endpoint selector and the address sets, all of them."""
        if peer.nets or peer.not_nets:
            address = _address(other.ip)
            if peer.nets and not any(address.version == n.version and address in n for n in peer.nets):
                return False
            if any(address.version == n.version and address in n for n in peer.not_nets):
                return False
        if peer.endpoint is None:
            return True
        pod = other.pod
        return pod is not None and peer.endpoint.matches(pod, self.cluster.namespace_labels(pod.namespace))

    def rule_matches(
        self, rule: Rule, policy_namespace: str, other: Endpoint, port: int, protocol: str, dst_pod: Pod | None,
        subject: Pod | None = None,
    ) -> bool:
        if rule.ports and not any(port_matches(spec, port, protocol, dst_pod) for spec in rule.ports):
            return False
        if not rule.peers:
            return True
        peers = self._peers_of(rule)
        if peers.blocks or peers.world_blocks:
            inside = self.addresses.of(other.ip)[1]
            if not peers.blocks.isdisjoint(inside) or (
                    peers.world_blocks and other.kind in _WORLD and not peers.world_blocks.isdisjoint(inside)):
                return True
        return any(self.peer_matches(p, policy_namespace, other, subject) for p in peers.others)

    def _peers_of(self, rule: Rule) -> _RulePeers:
        found = self._rule_peers.get(id(rule))
        if found is None:
            index = self.addresses.index
            found = self._rule_peers[id(rule)] = _RulePeers(
                frozenset(index[p.ip_block] for p in rule.peers if p.ip_block is not None and not p.world_only),
                frozenset(index[p.ip_block] for p in rule.peers if p.ip_block is not None and p.world_only),
                tuple(p for p in rule.peers if p.ip_block is None))
        return found

    def _decide(self, direction: str, policies: tuple[NetworkPolicy, ...], subject: Pod, other: Endpoint,
                port: int, protocol: str, dst_pod: Pod | None) -> SideVerdict:
        """The staged walk of the module docstring over the policies that apply to ``subject``, tier
        by tier (ClusterNetworkPolicy Admin, the policies of the namespace, Baseline)."""
        names = tuple(policy.key for policy in policies if direction in policy.policy_types)
        passed: RuleRef | None = None
        for tier, tier_policies in groupby(policies, key=lambda policy: policy.stage[0]):
            passed_here = self._walk_tier(direction, tier_policies, names, other, port, protocol, dst_pod, subject)
            if isinstance(passed_here, SideVerdict):
                return passed_here
            if passed_here is not None:
                passed = passed_here  # Pass: the rest of this tier is skipped, with its end-of-tier deny
            elif tier == TIER_POLICY and names:
                return SideVerdict(direction, Basis.NO_RULE, names)
        if passed is not None:
            return SideVerdict(direction, Basis.PASS, names, (passed,))
        return SideVerdict(direction, Basis.NOT_ISOLATED, names)

    def _walk_tier(self, direction: str, policies: Iterable[NetworkPolicy], names: tuple[str, ...], other: Endpoint,
                   port: int, protocol: str, dst_pod: Pod | None, subject: Pod) -> SideVerdict | RuleRef | None:
        """One tier's decision (a side isolated by the policies ``names``, built with them rather than
        copied with them after: one per side judged), the Pass rule that ended it, or None when nothing
        in it matched."""
        for _, stage in groupby(policies, key=lambda policy: policy.stage):
            admitted: list[RuleRef] = []
            denied: list[RuleRef] = []
            for policy in stage:
                for index, rule in enumerate(policy.rules(direction)):
                    if not self.rule_matches(rule, policy.namespace, other, port, protocol, dst_pod, subject):
                        continue
                    ref = RuleRef(policy.key, index)
                    if rule.action == "Pass":
                        return ref
                    (denied if rule.action == "Deny" else admitted).append(ref)
                    if policy.first_match:
                        break
            if denied:
                return SideVerdict(direction, Basis.DENY_RULE, names, (), tuple(denied))
            if admitted:
                return SideVerdict(direction, Basis.RULE, names, tuple(admitted))
        return None

    def _pod_class(self, pod: Pod) -> tuple[int, int]:
        """What selectors can see of a pod (its namespace and labels) and what named ports can (its
        container ports), each as a small number shared by the pods alike: a side's cache key is
        then hashed from ints, not rebuilt from label sets and port tuples per connection."""
        key = self._label_keys.get(id(pod))
        if key is None:
            seen = (pod.namespace, frozenset(pod.labels.items()))
            key = self._label_keys[id(pod)] = (self._interned.setdefault(seen, len(self._interned)),
                                               self._interned.setdefault(pod.container_ports, len(self._interned)))
        return key

    def _side(self, direction: str, subject: Endpoint, other: Endpoint, port: int, protocol: str,
              dst_pod: Pod | None) -> SideVerdict:
        pod = subject.pod
        if pod is None or pod.host_network:  # a host-network pod is its node to policies (e.g. a slice backend)
            return _FIXED[direction, Basis.NOT_A_POD]
        if other.pod is pod:
            return _FIXED[direction, Basis.SAME_POD]
        if other.node is not None and other.node.name == pod.node_name:
            return _FIXED[direction, Basis.OWN_NODE]
        policies, looks_address, looks_nodes, subject_class = self._subject(pod, direction)
        if not policies:
            return _FIXED[direction, Basis.NOT_ISOLATED]
        # Past the identity checks above, the decision depends only on what selectors, ipBlocks and
        # named ports can see: the subject's namespace and labels (which fix ``policies``), the other
        # end's namespace and labels (or that it is no pod), its address's class (its family and the
        # policies' address blocks containing it, :mod:`.addresses`), what it is and the names it
        # answered for (and whether it is the API server's), when some rule looks at addresses, the
        # destination pod's container ports, and port/protocol; the subject's node only for Cilium's node
        # entities. Pods alike in those share one decision, so a new pod of a known workload costs a
        # dictionary lookup.
        key = (direction, subject_class, self._pod_class(other.pod)[0] if other.pod is not None else None,
               (self.addresses.of(other.ip), id(other.kind), other.names, other.node, other.api_server)
               if looks_address else None,
               pod.node_name if looks_nodes else None,
               self._pod_class(dst_pod)[1] if dst_pod is not None else None, port, protocol)
        verdict = self._sides.get(key)
        if verdict is None:
            verdict = self._sides[key] = self._decide(direction, policies, pod, other, port, protocol, dst_pod)
        return verdict

    def _subject(self, pod: Pod, direction: str) -> tuple[tuple[NetworkPolicy, ...], bool, bool, int]:
        """What a side's judgement needs of its subject pod, in one lookup per side: the policies
        that apply, whether they look at the other end's address and at nodes, its label class."""
        key = (id(pod), direction)
        found = self._subjects.get(key)
        if found is None:
            policies = self.applying(pod, direction)
            found = self._subjects[key] = (policies, *self._looks(policies, direction), self._pod_class(pod)[0])
        return found

    def _looks(self, policies: tuple[NetworkPolicy, ...], direction: str) -> tuple[bool, bool]:
        """Whether some rule of ``policies`` looks at the other end's address, and at nodes (entities)."""
        key = (id(policies), direction)
        found = self._looks_cache.get(key)
        if found is None:
            peers = [peer for policy in policies for rule in policy.rules(direction) for peer in rule.peers]
            found = self._looks_cache[key] = (
                any(peer.ip_block is not None or peer.generic or peer.entities or peer.fqdns or peer.nodes is not None
                    for peer in peers),
                any(peer.entities for peer in peers))
        return found

    # --- public API -----------------------------------------------------------------------------

    def judge(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Verdict:
        """Judge a connection from ``src`` to ``dst`` arriving on ``port`` of the destination."""
        # the ends by what they are made of (kinds by identity): hashing the Endpoints themselves
        # runs Enum.__hash__ in Python, twice per connection
        key = (src.ip, id(src.kind), src.pod, src.node, src.names, dst.ip, id(dst.kind), dst.pod, dst.node, dst.names,
               port, protocol)
        verdict = self._verdicts.get(key)
        if verdict is None:  # bounded: external addresses are countless
            verdict = remember(self._verdicts, key, self._judge_pair(src, dst, port, protocol)[0].verdict(src, dst))
        return verdict

    def _end_class(self, end: Endpoint) -> tuple[object, ...]:
        """Everything of one end that a side verdict can see (see :meth:`_side`), in either role, but
        its pod's identity and node: its kind, its pod's namespace, labels and container ports and
        whether it is host-network, its address's class, its DNS names, its node, whether it is the
        API server's. Memoised per end (ends are shared by content where connections are grouped)."""
        found = self._end_classes.get(id(end))
        if found is not None and found[0] is end:
            return found[1]
        pod = end.pod
        found = remember(self._end_classes, id(end), (end, (
            id(end.kind), None if pod is None else (self._pod_class(pod), pod.host_network),
            self.addresses.of(end.ip), end.names, end.node, end.api_server)))
        return found[1]

    def _judge_pair(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> tuple[Judged]:
        """Both sides of a connection, shared by the connections whose ends are alike: ends of one
        class each (:meth:`_end_class`), the same pod or not, and, where the other end is a node, the
        pod's node (the one thing of a pod's placement a side looks at: own node, Cilium's node
        entities). Pods of one workload calling alike peers then cost one lookup, not two side judgements."""
        src_pod, dst_pod = src.pod, dst.pod
        key = (self._end_class(src), self._end_class(dst), src_pod is not None and src_pod is dst_pod,
               src_pod.node_name if src_pod is not None and dst.node is not None else None,
               dst_pod.node_name if dst_pod is not None and src.node is not None else None, port, protocol)
        found = self._alike.get(key)
        if found is None:
            found = remember(self._alike, key, (Judged(
                None, port, protocol,
                egress=self._side(EGRESS, src, dst, port, protocol, dst_pod),
                ingress=self._side(INGRESS, dst, src, port, protocol, dst_pod),
            ),))
        return found

    def judge_flow(self, flow: Flow) -> FlowVerdict:
        """Judge a recorded flow, resolving its addresses at the flow's time and a Service
        destination to its backend pods and targetPorts."""
        cluster = self.cluster
        src = cluster.endpoint(flow.src_ip, flow.ts)
        target = cluster.service_target(flow.dst_ip, flow.dst_port, flow.protocol, flow.ts)
        behind = target is not None and (target.backends or target.others)
        dst = None if behind else cluster.endpoint(flow.dst_ip, flow.ts)
        return FlowVerdict(flow, self.judge_resolved(src, target, dst, flow.dst_ip, flow.dst_port, flow.protocol,
                                                     flow.ts), target)

    def _backend_end(self, pod: Pod, service_ip: str) -> Endpoint:
        """``Endpoint.of_pod(pod, service_ip)``, memoised: a Service's backends are judged again for
        every new client, and choosing a dual-stack pod's address of the family costs more than judging."""
        key = (id(pod), service_ip)
        found = self._backend_ends.get(key)
        if found is None or found.pod is not pod:
            found = remember(self._backend_ends, key, Endpoint.of_pod(pod, service_ip))
        return found

    def judge_resolved(self, src: Endpoint, target: ServiceTarget | None, dst: Endpoint | None, dst_ip: str,
                       port: int, protocol: str, ts: float | None = None) -> tuple[Verdict, ...]:
        """The verdicts of a flow whose ends are resolved (what :meth:`judge_flow` does after the
        lookups, for callers that resolve once per stretch of time): :meth:`judge_alike`'s, with
        ``src`` and ``dst`` put back."""
        judged = self.judge_alike(src, target, dst, dst_ip, port, protocol, ts)
        return tuple(j.verdict(src, dst) for j in judged)

    def judge_alike(self, src: Endpoint, target: ServiceTarget | None, dst: Endpoint | None, dst_ip: str,
                    port: int, protocol: str, ts: float | None = None) -> tuple[Judged, ...]:
        """The verdicts of a flow whose ends are resolved, less its ends, one object for all the flows
        whose ends are alike: a Service target with backends is judged once per backend on its
        targetPort, a pod reached on its address of ``dst_ip``'s family, a backend that is no pod (the
        API server's) as the cluster names its address at ``ts``; otherwise ``dst`` (then not None)
        on ``port``."""
        if target is not None and (target.backends or target.others):
            src_pod = src.pod
            if target.others or (src_pod is not None and any(b.pod is src_pod for b in target.backends)):
                return self._judge_backends(src, target, dst_ip, protocol, ts)  # alike by more than class
            key = (self._end_class(src), id(target), dst_ip, protocol)
            found = self._alike_backends.get(key)
            if found is None or found[0] is not target:
                found = remember(self._alike_backends, key,
                                 (target, self._judge_backends(src, target, dst_ip, protocol, ts)))
            return found[1]
        if dst is None:
            raise ValueError("judge_resolved: no destination endpoint and no Service backends")
        return self._judge_pair(src, dst, port, protocol)

    def _judge_backends(self, src: Endpoint, target: ServiceTarget, dst_ip: str, protocol: str,
                        ts: float | None) -> tuple[Judged, ...]:
        ends = [(self._backend_end(backend.pod, dst_ip), backend.port) for backend in target.backends]
        ends += [(self.cluster.endpoint(ip, ts), other_port) for ip, other_port in target.others]
        return tuple(dataclasses.replace(self._judge_pair(src, end, end_port, protocol)[0], dst=end)
                     for end, end_port in ends)
