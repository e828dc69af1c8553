"""Which learned edges the policies must allow: the one filter both synthesis and verification use,
so that "what we meant to allow" and "what we check is allowed" cannot drift apart.

An edge between a node and pods that ran on that very node (kubelet probes, node-local agents) is
allowed by the own-node rule of NetworkPolicy semantics whatever the policies say; writing the node's
addresses as an ipBlock would allow nothing more for it and pin the node addresses into the policy.
Such edges are set apart (``own_node``): not written, still verified."""

from __future__ import annotations

from dataclasses import dataclass

from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.learned import (
    LearnedEdge,
    LearnedInputs,
    WorkloadKey,
    workload_key,
)
from netpol_gen.synthesizer.options import Options


@dataclass(frozen=True, slots=True)
class LeftOut:
    """An observed edge that no generated policy allows, and why (the report lists these)."""

    edge: LearnedEdge
    reason: str

    def describe(self) -> str:
        return f"{self.edge.describe()}: {self.reason}"


@dataclass(frozen=True)
class EdgeSelection:
    """``kept``: edges the policies must allow. ``own_node``: edges only ever seen between a pod and its
    own node, which need no rule. ``filtered``: how many fell outside the learning window or under
    ``min_connections`` (left out on purpose, not listed)."""

    kept: tuple[LearnedEdge, ...]
    left_out: tuple[LeftOut, ...]
    filtered: int
    own_node: tuple[LearnedEdge, ...] = ()


def _in_window(edge: LearnedEdge, options: Options) -> bool:
    """Edges without timestamps (flow logs without times) cannot be placed and are kept."""
    if options.since is not None and edge.last_seen is not None and edge.last_seen < options.since:
        return False
    return not (options.until is not None and edge.first_seen is not None and edge.first_seen > options.until)


def _subject_in_scope(identity: Identity, options: Options) -> bool:
    return identity.kind is IdentityKind.POD and options.in_scope(identity.namespace or "")


def _unrepresentable(
    identity: Identity, inputs: LearnedInputs, options: Options, with_pods: set[WorkloadKey]
) -> str | None:
    kind = identity.kind
    if kind is IdentityKind.POD:
        return None if workload_key(identity) in with_pods else "no pods known for the workload"
    if kind is IdentityKind.NODE:
        return None if inputs.nodes.get(identity.node or "") else f"addresses of node {identity.node} unknown"
    if not identity.ip:
        return "address missing"
    if kind is IdentityKind.UNKNOWN and not options.include_unknown:
        return "unknown cluster IP (include_unknown to allow it)"
    return None


def select_edges(inputs: LearnedInputs, options: Options) -> EdgeSelection:
    """The edges touching a workload in scope that pass the window and ``min_connections``, minus
    those whose other end no policy can name."""
    with_pods = {w.key for w in inputs.workloads if w.pods}
    kept: list[LearnedEdge] = []
    own_node: list[LearnedEdge] = []
    left_out: list[LeftOut] = []
    filtered = 0
    for edge in inputs.edges:
        if not (_subject_in_scope(edge.src, options) or _subject_in_scope(edge.dst, options)):
            continue
        if edge.connections < options.min_connections or not _in_window(edge, options):
            filtered += 1
            continue
        if edge.own_node_only:  # needs no rule, so neither the node's addresses
            own_node.append(edge)
            continue
        reason = _unrepresentable(edge.src, inputs, options, with_pods) or _unrepresentable(
            edge.dst, inputs, options, with_pods
        )
        if reason is None:
            kept.append(edge)
        else:
            left_out.append(LeftOut(edge, reason))
    return EdgeSelection(tuple(kept), tuple(left_out), filtered, tuple(own_node))
