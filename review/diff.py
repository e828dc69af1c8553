"""What would change if a proposed policy set replaced the one in force, policy by policy (unified YAML
diffs) and on the recorded traffic (flows cut, flows newly allowed, connectivity newly opened that was
never observed).

:func:`diff_sets` is the whole comparison given the two sets, the cluster and the flows;
:func:`review_change` gathers them from files, the live cluster, or a learning source (``--db`` or
``--server``), which supplies whichever is not given: the proposed set synthesized with ``export``'s
options, the learned pods and Services as the cluster, the flows kept as evidence as the traffic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netpol_gen.errors import InputError
from netpol_gen.evaluator.impact import Impact, compute_impact
from netpol_gen.evaluator.policy_diff import (
    PolicyDocument,
    PolicySetDiff,
    diff_policy_sets,
    load_policy_documents,
    policy_documents,
)
from netpol_gen.model import Cluster, Flow, iter_flows, load_cluster
from netpol_gen.model.dns import names_throughout
from netpol_gen.model.documents import Document
from netpol_gen.model.flows import open_flows
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.review.in_force import fetch_policies_in_force
from netpol_gen.service.source import LearningSource
from netpol_gen.synthesizer import Options, Synthesis, synthesize
from netpol_gen.synthesizer.verify import LearnedCluster

EXIT_NO_CHANGE, EXIT_CHANGES, EXIT_FLOWS_CUT = 0, 1, 3


@dataclass
class DiffReport:
    """The comparison; ``warnings`` are what synthesizing the proposed set reported as bugs."""

    policies: PolicySetDiff
    impact: Impact
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.impact.flows_broken:
            return EXIT_FLOWS_CUT
        return EXIT_CHANGES if self.policies.has_changes or self.impact.has_changes else EXIT_NO_CHANGE

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {"policies": self.policies.counts(), "exit_code": self.exit_code},
            "policies": [c.to_dict() for c in self.policies.changes],
            "impact": self.impact.to_dict(),
        }


def diff_sets(
    current: list[PolicyDocument], proposed: list[PolicyDocument], cluster: Cluster, flows: Iterable[Flow]
) -> DiffReport:
    """Compare the set in force with the proposed one, policy by policy and on the recorded flows."""
    impact = compute_impact(cluster, [d.policy for d in current], [d.policy for d in proposed], flows)
    return DiffReport(diff_policy_sets(current, proposed), impact)


@dataclass(frozen=True)
class DiffRequest:
    """What the user gave: paths (empty: take it from the learning source), or the live cluster's set."""

    proposed: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    against_cluster: bool = False
    clusters: tuple[str, ...] = ()
    flows: str | None = None


def synthesized_documents(synthesis: Synthesis) -> list[PolicyDocument]:
    """The synthesized policies as a policy set, each named for where it came from."""
    return policy_documents(Document(f"synthesized:{p['metadata']['namespace']}/{p['metadata']['name']}", p)
                            for p in synthesis.policies)


def proposed_from(learned: LearnedInputs, options: Options) -> tuple[list[PolicyDocument], list[str]]:
    """The set ``export`` would write from ``learned`` with ``options``, and its verification's bug messages."""
    synthesis = synthesize(learned, options)
    return synthesized_documents(synthesis), [d.bug_message() for d in synthesis.report.verification.denied]


def review_change(request: DiffRequest, source: LearningSource | None, options: Options) -> DiffReport:
    """The diff of ``request``; ``source`` (a store or server) supplies the inputs not given."""
    if request.against_cluster == bool(request.against):
        raise InputError("give the policies in force with --against FILE|DIR or --against-cluster (one of them)")
    if source is None and not (request.proposed and request.clusters and request.flows):
        raise InputError("give --proposed, --cluster and --flows, or --db/--server to take what is missing "
                         "from the store")
    current = fetch_policies_in_force() if request.against_cluster else load_policy_documents(request.against)
    learned = functools.cache(source.learned) if source is not None else None  # read once, if at all
    warnings: list[str] = []
    if request.proposed or learned is None:
        proposed = load_policy_documents(request.proposed)
    else:
        proposed, warnings = proposed_from(learned(), options)
    if request.clusters or source is None or learned is None:
        cluster = load_cluster(request.clusters)
    else:
        cluster = LearnedCluster(learned(), source.services()).cluster
    if learned is not None:  # external addresses named as learnt, for Cilium toFQDNs
        cluster.set_dns(names_throughout(learned().dns_names))
    if request.flows is None and source is not None:
        report = diff_sets(current, proposed, cluster, source.evidence())
    else:
        stream, name = open_flows(request.flows or "-")
        with stream:
            report = diff_sets(current, proposed, cluster, iter_flows(stream, name))
    report.warnings = warnings
    return report
