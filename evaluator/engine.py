"""The evaluator: NetworkPolicy semantics, compiled once and cached, the one place in netpol-gen
that matches selectors, peers and ports.

A connection is allowed iff the source's egress and the destination's ingress both allow it. A side
is judged only when its endpoint is a pod; a pod may always talk to itself and to and from the node
it runs on (the API reference's two exceptions); a pod is isolated for a direction iff some policy of its
namespace selects it with that direction in policyTypes, and then the union of those policies' rules
decides. Policies are indexed by namespace, the policies isolating each pod are computed once per
pod, and verdicts are cached per (source, destination, port, protocol), so judging a million flows
is a dictionary lookup per flow once the distinct connections have been seen.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

from netpol_gen.evaluator.policy import NetworkPolicy, Peer, PortSpec, Rule
from netpol_gen.evaluator.verdict import Basis, FlowVerdict, RuleRef, SideVerdict, Verdict
from netpol_gen.model.cluster import Cluster, Endpoint, Pod
from netpol_gen.model.flows import Flow

INGRESS, EGRESS = "Ingress", "Egress"


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
        for policy in self.policies:
            self._by_namespace[policy.namespace].append(policy)
        self._isolating: dict[tuple[int, str], tuple[NetworkPolicy, ...]] = {}
        self._label_keys: dict[int, tuple[str, frozenset[tuple[str, str]]]] = {}
        self._sides: dict[tuple[object, ...], SideVerdict] = {}
        self._verdicts: dict[tuple[Endpoint, Endpoint, int, str], Verdict] = {}

    # --- isolation ------------------------------------------------------------------------------

    def isolating(self, pod: Pod, direction: str) -> tuple[NetworkPolicy, ...]:
        """The policies that select ``pod`` for ``direction`` ("Ingress" or "Egress")."""
        key = (id(pod), direction)
        found = self._isolating.get(key)
        if found is None:
            found = tuple(
                policy
                for policy in self._by_namespace.get(pod.namespace, ())
                if direction in policy.policy_types and policy.pod_selector.matches(pod.labels)
            )
            self._isolating[key] = found
        return found

    # --- matching -------------------------------------------------------------------------------

    def peer_matches(self, peer: Peer, policy_namespace: str, other: Endpoint) -> bool:
        if peer.ip_block is not None:
            return peer.ip_block.contains(_address(other.ip))
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

    def rule_matches(
        self, rule: Rule, policy_namespace: str, other: Endpoint, port: int, protocol: str, dst_pod: Pod | None
    ) -> bool:
        if rule.ports and not any(port_matches(spec, port, protocol, dst_pod) for spec in rule.ports):
            return False
        return not rule.peers or any(self.peer_matches(p, policy_namespace, other) for p in rule.peers)

    def _pod_class(self, pod: Pod) -> tuple[str, frozenset[tuple[str, str]]]:
        """What selectors can see of a pod: its namespace and labels."""
        key = self._label_keys.get(id(pod))
        if key is None:
            key = self._label_keys[id(pod)] = (pod.namespace, frozenset(pod.labels.items()))
        return key

    def _side(self, direction: str, subject: Endpoint, other: Endpoint, port: int, protocol: str,
              dst_pod: Pod | None) -> SideVerdict:
        pod = subject.pod
        if pod is None or pod.host_network:  # a host-network pod is its node to policies (e.g. a slice backend)
            return SideVerdict(direction, Basis.NOT_A_POD)
        if other.pod is pod:
            return SideVerdict(direction, Basis.SAME_POD)
        if other.node is not None and other.node.name == pod.node_name:
            return SideVerdict(direction, Basis.OWN_NODE)
        policies = self.isolating(pod, direction)
        if not policies:
            return SideVerdict(direction, Basis.NOT_ISOLATED)
        # Past the identity checks above, the decision depends only on what selectors, ipBlocks and
        # named ports can see: the subject's namespace and labels (which fix ``policies``), the other
        # end's namespace and labels (or that it is no pod), its address when some rule has an
        # ipBlock, the destination pod's container ports, and port/protocol. Pods alike in those
        # share one decision, so a new pod of a known workload costs a dictionary lookup.
        uses_ip = any(peer.ip_block is not None for policy in policies for rule in policy.rules(direction)
                      for peer in rule.peers)
        key = (direction, self._pod_class(pod), self._pod_class(other.pod) if other.pod is not None else None,
               other.ip if uses_ip else None, dst_pod.container_ports if dst_pod is not None else None,
               port, protocol)
        verdict = self._sides.get(key)
        if verdict is None:
            admitted = tuple(
                RuleRef(policy.key, index)
                for policy in policies
                for index, rule in enumerate(policy.rules(direction))
                if self.rule_matches(rule, policy.namespace, other, port, protocol, dst_pod)
            )
            names = tuple(policy.key for policy in policies)
            verdict = self._sides[key] = SideVerdict(
                direction, Basis.RULE if admitted else Basis.NO_RULE, names, admitted)
        return verdict

    # --- public API -----------------------------------------------------------------------------

    def judge(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> Verdict:
        """Judge a connection from ``src`` to ``dst`` arriving on ``port`` of the destination."""
        key = (src, dst, port, protocol)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = Verdict(
                src, dst, port, protocol,
                egress=self._side(EGRESS, src, dst, port, protocol, dst.pod),
                ingress=self._side(INGRESS, dst, src, port, protocol, dst.pod),
            )
            self._verdicts[key] = verdict
        return verdict

    def judge_flow(self, flow: Flow) -> FlowVerdict:
        """Judge a recorded flow, resolving its addresses at the flow's time and a Service
        destination to its backend pods and targetPorts."""
        cluster = self.cluster
        src = cluster.endpoint(flow.src_ip, flow.ts)
        target = cluster.service_target(flow.dst_ip, flow.dst_port, flow.protocol, flow.ts)
        if target is not None and target.backends:
            verdicts = tuple(
                self.judge(src, Endpoint.of_pod(backend.pod, flow.dst_ip), backend.port, flow.protocol)
                for backend in target.backends
            )
            return FlowVerdict(flow, verdicts, target)
        dst = cluster.endpoint(flow.dst_ip, flow.ts)
        return FlowVerdict(flow, (self.judge(src, dst, flow.dst_port, flow.protocol),), target)
