"""From learned workloads and edges to one NetworkPolicy per workload, verified by the evaluator.

Each policy isolates its workload for the directions asked (explicit ``policyTypes``) and allows
exactly the observed peers and ports, folded where that is exact (:mod:`.fold`); a direction with no
observed traffic stays closed (empty list). A workload seen with no traffic gets no policy unless
``isolate_idle``: an accidental isolation is worse than a missing policy.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from netpol_gen.evaluator.impact import OpenedConnection
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import (
    LearnedEdge,
    LearnedInputs,
    LearnedWorkload,
    PodView,
    WorkloadKey,
    workload_key,
)
from netpol_gen.synthesizer.baseline import Item, baseline_policy, common_egress, egress_items
from netpol_gen.synthesizer.explain import RuleEvidence, timestamp
from netpol_gen.synthesizer.fold import PeerFolder
from netpol_gen.synthesizer.options import Options
from netpol_gen.synthesizer.peers import Grant, PeerFactory, PeerRef
from netpol_gen.synthesizer.ports import PortRef, port_ref
from netpol_gen.synthesizer.render import IPBLOCK_NOTES, dump_documents, render_yaml
from netpol_gen.synthesizer.rules import build_rules
from netpol_gen.synthesizer.scope import EdgeSelection, LeftOut, select_edges
from netpol_gen.synthesizer.selectors import SelectorCache, selected_workloads
from netpol_gen.synthesizer.targets import KUBERNETES, translate
from netpol_gen.synthesizer.verify import Verification, newly_opened, verify

GENERATOR = f"netpol-gen {version('netpol-gen')}"
MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-gen"}
NAME_SUFFIX = "-netpol-gen"
DEFAULT_DENY_NAME = "netpol-gen-default-deny"  # cannot collide: workload policies end in NAME_SUFFIX
MAX_NAME = 253
PEER_FIELD = {"Ingress": "from", "Egress": "to"}
DNS_PORT = 53

PolicyKey = tuple[str, str]  # (namespace, name)


@dataclass
class _Observed:
    ports: set[PortRef] = field(default_factory=set)
    edges: list[LearnedEdge] = field(default_factory=list)
    numbers: set[tuple[str, int]] = field(default_factory=set)  # (protocol, port number) behind ``ports``


Grants = dict[WorkloadKey, dict[PeerRef, _Observed]]


@dataclass
class Report:
    """What a reviewer needs besides the YAML: warnings, what was left out and why, and size figures."""

    warnings: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    unknown_ips: list[str] = field(default_factory=list)
    own_node: list[LearnedEdge] = field(default_factory=list)  # allowed by the own-node rule: not written
    idle: list[str] = field(default_factory=list)
    filtered_edges: int = 0
    policies: int = 0
    rules: int = 0
    peers: int = 0
    yaml_lines: int = 0
    verification: Verification = field(default_factory=Verification)
    opened: list[OpenedConnection] | None = None  # None: tightness not measured
    baseline_namespaces: list[str] = field(default_factory=list)  # subject of the Baseline policy (--baseline)
    baseline_workloads: list[str] = field(default_factory=list)  # whose egress the Baseline policy holds


@dataclass
class Synthesis:
    """The policies, the report, per policy the edges behind each rule (``evidence``), and each policy's
    YAML document as :func:`.render.dump_documents` wrote it (``documents``, in the same order; None
    when not dumped), which the renderers take instead of dumping the set again."""

    policies: list[dict[str, Any]]
    report: Report
    evidence: dict[PolicyKey, RuleEvidence] = field(default_factory=dict)
    documents: list[str] | None = None

    @property
    def ok(self) -> bool:
        """False when verification found an observed edge the policies deny (a bug)."""
        return self.report.verification.ok


def policy_names(workloads: Iterable[LearnedWorkload]) -> dict[WorkloadKey, str]:
    """``<workload>-netpol-gen``; ``<workload>-<kind>-netpol-gen`` when two kinds share a name in a
    namespace; a name past 253 characters is cut and made unique with a hash of the workload key."""
    workloads = list(workloads)
    shared = Counter((w.namespace, w.name) for w in workloads)
    names = {}
    for w in workloads:
        base = f"{w.name}-{w.kind.lower()}" if shared[(w.namespace, w.name)] > 1 else w.name
        if len(base) + len(NAME_SUFFIX) > MAX_NAME:
            digest = hashlib.sha256("/".join(w.key).encode()).hexdigest()[:10]
            base = f"{base[:MAX_NAME - len(NAME_SUFFIX) - len(digest) - 1].rstrip('-.')}-{digest}"
        names[w.key] = base + NAME_SUFFIX
    return names


def _window(edges: Sequence[LearnedEdge], options: Options) -> tuple[str, str]:
    """The learning window: the one asked for, else the span of the edges used."""
    firsts = [e.first_seen for e in edges if e.first_seen is not None]
    lasts = [e.last_seen for e in edges if e.last_seen is not None]
    since = options.since if options.since is not None else min(firsts, default=None)
    until = options.until if options.until is not None else max(lasts, default=None)
    return timestamp(since), timestamp(until)


def _policy(namespace: str, name: str, selector: dict[str, Any], rules: dict[str, list[dict[str, Any]]],
            annotations: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": list(rules)}
    for direction, direction_rules in rules.items():
        spec[direction.lower()] = direction_rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY), "annotations": annotations},
        "spec": spec,
    }


def _grants(edges: Iterable[LearnedEdge], options: Options, selectors: SelectorCache,
            peers: PeerFactory) -> dict[str, Grants]:
    """Per direction, per subject workload in scope: the peers observed, the ports each used and the
    edges that showed it."""
    grants: dict[str, Grants] = {d: defaultdict(lambda: defaultdict(_Observed)) for d in ("Ingress", "Egress")}

    def pods_of(identity: Identity) -> tuple[PodView, ...]:
        return selectors.workloads[workload_key(identity)].pods if identity.kind is IdentityKind.POD else ()

    for edge in edges:
        numbers = {(edge.protocol, edge.port)}
        if options.dns_tcp and edge.protocol == "UDP" and edge.port == DNS_PORT:
            numbers.add(("TCP", edge.port))
        ports = {port_ref(port, protocol, pods_of(edge.dst), options.named_ports) for protocol, port in numbers}
        for direction, subject, other in (("Egress", edge.src, edge.dst), ("Ingress", edge.dst, edge.src)):
            if subject.kind is IdentityKind.POD and options.in_scope(subject.namespace or ""):
                for peer in peers.peers(other, subject.namespace or ""):
                    observed = grants[direction][workload_key(subject)][peer]
                    observed.ports |= ports
                    observed.numbers |= numbers
                    observed.edges.append(edge)
    return grants


def _observed(grants: Grants, keys: Iterable[WorkloadKey]) -> dict[PeerRef, _Observed]:
    """The peers of one direction of the workloads ``keys`` (a writer and the orphans it carries), merged."""
    observed: dict[PeerRef, _Observed] = defaultdict(_Observed)
    for key in keys:
        for peer, seen in grants.get(key, {}).items():
            observed[peer].ports |= seen.ports
            observed[peer].numbers |= seen.numbers
            observed[peer].edges += seen.edges
    return observed


def synthesize(inputs: LearnedInputs, options: Options | None = None, *, measure_tightness: bool = False,
               target: str = KUBERNETES, fqdn_patterns: bool = False, baseline: bool = False) -> Synthesis:
    """Policies for every workload in scope, in (namespace, name) order, and the report; the result is
    verified with the evaluator (``Synthesis.ok``). ``target`` (see :mod:`.targets`) renders them for
    Cilium or Calico before verification, which then judges that set. ``baseline`` (NetworkPolicies
    only) moves the egress every namespace does alike into a Baseline-tier ClusterNetworkPolicy
    (:mod:`.baseline`), verified with the rest."""
    if baseline and target != KUBERNETES:
        raise ValueError("baseline ClusterNetworkPolicies go with NetworkPolicies (target kubernetes)")
    options = options or Options()
    selection = select_edges(inputs, options)
    selectors = SelectorCache(inputs.workloads)
    peer_factory = PeerFactory(inputs, selectors)
    folder = PeerFolder(inputs, options)
    grants = _grants(selection.kept, options, selectors, peer_factory)
    report = Report(left_out=list(selection.left_out), filtered_edges=selection.filtered,
                    own_node=sorted(selection.own_node, key=lambda e: (e.src.key, e.dst.key, e.port, e.protocol)))
    writers, orphans = _plan(inputs, options, selection, selectors, report)
    since, until = _window(selection.kept, options)
    names = policy_names(inputs.workloads)
    policies: list[dict[str, Any]] = []
    evidence: dict[PolicyKey, RuleEvidence] = {}
    carried_by = {w.key: [o for o in selected_workloads(selectors.choice(w.key).match_labels, orphans)
                          if o.namespace == w.namespace] for w in writers}
    common: frozenset[Item] = frozenset()
    egress: dict[WorkloadKey, frozenset[Item]] = {}
    if baseline and "Egress" in options.directions:
        orphaned = {o.namespace for o in orphans}
        for w in writers:
            if w.namespace not in orphaned:
                merged = _observed(grants["Egress"], (w.key, *(o.key for o in carried_by[w.key])))
                egress[w.key] = egress_items({p: o.numbers for p, o in merged.items()}, w.namespace)
        common, report.baseline_namespaces = common_egress(egress)
        if not common:
            report.warnings.append("--baseline: no workloads of two or more namespaces have exactly the same "
                                   "egress; no ClusterNetworkPolicy written")
    elif baseline:
        report.warnings.append("--baseline holds egress only: nothing to do with --ingress-only")
    for workload in writers:
        labels = selectors.choice(workload.key).match_labels
        carried = carried_by[workload.key]
        report.warnings.extend(f"{workload}: its policy also allows the traffic of {o}, whose pods it selects "
                               f"and which has no policy of its own" for o in carried)
        annotations = {
            "netpol-gen.io/generated-by": GENERATOR,
            "netpol-gen.io/learned-since": since,
            "netpol-gen.io/learned-until": until,
            "netpol-gen.io/workload": f"{workload.kind}/{workload.name}",
        }
        rules: dict[str, list[dict[str, Any]]] = {}
        rule_evidence: RuleEvidence = evidence.setdefault((workload.namespace, names[workload.key]), {})
        for direction, notes_key in zip(("Ingress", "Egress"), IPBLOCK_NOTES, strict=True):
            if direction not in options.directions:
                continue
            if direction == "Egress" and common and egress.get(workload.key) == common:
                report.baseline_workloads.append(str(workload))
                continue  # the Baseline policy allows exactly this egress and denies the rest
            observed = _observed(grants[direction], (workload.key, *(o.key for o in carried)))
            built = build_rules({p: Grant(frozenset(o.ports), tuple(o.edges)) for p, o in observed.items()},
                                PEER_FIELD[direction], options, folder, workload.namespace)
            report.warnings.extend(f"{workload}: its {direction.lower()} allows every pod of namespace {ns}, "
                                   f"workloads created there later included (--fold-namespaces)"
                                   for ns in built.namespace_wide)
            rules[direction] = built.rules
            rule_evidence[direction.lower()] = built.evidence
            if built.ip_notes:
                annotations[notes_key] = json.dumps(built.ip_notes, sort_keys=True)
        if not rules:  # --egress-only and its egress left to the Baseline policy
            del evidence[(workload.namespace, names[workload.key])]
            continue
        policies.append(_policy(workload.namespace, names[workload.key],
                                {"matchLabels": dict(sorted(labels.items()))}, rules, annotations))
    if options.default_deny:
        policies.extend(_default_deny(inputs, options, {o.namespace for o in orphans}, report,
                                      set(report.baseline_namespaces)))
    policies.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
    report.warnings = sorted({*report.warnings, *selectors.warnings(), *peer_factory.warnings})
    ends = (end for lo in selection.left_out for end in (lo.edge.src, lo.edge.dst))
    report.unknown_ips = sorted({end.ip for end in ends if end.kind is IdentityKind.UNKNOWN and end.ip})
    _measure(report, policies)
    policies, translation_warnings = translate(policies, evidence, inputs, target, fqdn_patterns)
    report.warnings.extend(translation_warnings)
    if target != KUBERNETES:
        evidence = {}  # the rules' provenance is per NetworkPolicy rule
    if common:
        policies.append(baseline_policy(common, report.baseline_namespaces, {
            "netpol-gen.io/generated-by": GENERATOR, "netpol-gen.io/learned-since": since,
            "netpol-gen.io/learned-until": until}, MANAGED_BY))
        closed = [w for w in report.idle if w.split("/", 1)[0] in report.baseline_namespaces]
        report.warnings.extend(f"{w}: no traffic seen; the Baseline policy closes its egress to all but the "
                               f"common egress" for w in closed)
        report.policies += 1
    documents = dump_documents(policies)
    report.yaml_lines = render_yaml(policies, documents=documents).count("\n")
    report.verification = verify(policies, inputs, options, selection)
    report.warnings.extend(d.bug_message() for d in report.verification.denied)
    if measure_tightness:
        report.opened = newly_opened(policies, inputs)
    return Synthesis(policies, report, evidence, documents)


def _plan(inputs: LearnedInputs, options: Options, selection: EdgeSelection, selectors: SelectorCache,
          report: Report) -> tuple[list[LearnedWorkload], list[LearnedWorkload]]:
    """The workloads in scope that get a policy, and the orphans: workloads with traffic whose pods no
    selector can tell apart. An orphan's traffic rides on the policies that select its pods."""
    active = {workload_key(end) for e in (*selection.kept, *selection.own_node, *(lo.edge for lo in selection.left_out))
              for end in (e.src, e.dst) if end.kind is IdentityKind.POD}
    writers, orphans = [], []
    for workload in sorted(inputs.workloads, key=lambda w: w.key):
        if not options.in_scope(workload.namespace) or not workload.pods:
            continue
        if workload.key not in active and not options.isolate_idle:
            report.idle.append(str(workload))
        elif selectors.choice(workload.key).match_labels:
            writers.append(workload)
        else:
            report.warnings.append(f"{workload}: no policy written (its pods cannot be selected apart)")
            orphans.append(workload)
    return writers, orphans


def _default_deny(inputs: LearnedInputs, options: Options, orphaned: set[str], report: Report,
                  baseline: set[str]) -> list[dict[str, Any]]:
    """A select-all policy per namespace in scope with workloads, for the directions asked; none where
    a workload with observed traffic has no policy of its own, as the default-deny would cut it off.
    In the ``baseline`` namespaces egress is left out: the Baseline policy denies it (a NetworkPolicy
    isolating egress would decide before the Baseline tier and cut the egress it holds)."""
    report.warnings.extend(f"namespace {ns}: no default-deny policy, a workload with traffic has no policy"
                           for ns in sorted(orphaned))
    namespaces = sorted({w.namespace for w in inputs.workloads if options.in_scope(w.namespace)} - orphaned)
    annotations = {"netpol-gen.io/generated-by": GENERATOR}
    directions = {ns: [d for d in options.directions if not (d == "Egress" and ns in baseline)] for ns in namespaces}
    return [_policy(ns, DEFAULT_DENY_NAME, {}, {d: [] for d in directions[ns]}, dict(annotations))
            for ns in namespaces if directions[ns]]


def _measure(report: Report, policies: Sequence[dict[str, Any]]) -> None:
    report.policies = len(policies)
    for policy in policies:
        for direction, peer_field in PEER_FIELD.items():
            for rule in policy["spec"].get(direction.lower(), []):
                report.rules += 1
                report.peers += len(rule[peer_field])
