"""Short, plain summaries a reviewer understands at once: what an export writes, what a change does.

They come first in ``export``'s report, ``diff``'s text and markdown, and ``map``'s output, and say
the few things that decide a review (does it break anything seen? does it open anything never seen?)
in words, with the numbers; the detail follows them, never the other way round.
"""

from __future__ import annotations

from netpol_gen.evaluator.impact import Impact
from netpol_gen.evaluator.policy_diff import Change, PolicySetDiff
from netpol_gen.synthesizer import Report


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def export_summary(report: Report, workloads: int) -> list[str]:
    """What ``export`` writes, for ``workloads`` workloads learnt."""
    verification = report.verification
    checked = ("every observed connection is allowed" if verification.ok
               else f"{_plural(len(verification.denied), 'observed connection')} DENIED (a bug: see below)")
    lines = [f"{_plural(report.policies, 'policy', 'policies')} for {workloads} workloads learnt "
             f"({_plural(report.rules, 'rule')}, {report.yaml_lines} YAML lines); checked against the learnt "
             f"traffic: {checked} ({verification.judged} pod-to-pod connections judged)."]
    if report.baseline_namespaces:
        lines.append(f"Baseline: the egress every namespace does alike ({len(report.baseline_namespaces)} "
                     f"namespaces) is one Baseline-tier ClusterNetworkPolicy; "
                     f"{_plural(len(report.baseline_workloads), 'workload')} leave their egress to it.")
    left = []
    if report.own_node:
        left.append(f"{_plural(len(report.own_node), 'node-to-pod edge')} need no rule (a pod's own node is "
                    f"always allowed)")
    if report.idle:
        left.append(f"{_plural(len(report.idle), 'workload')} with no traffic left without a policy")
    if report.unknown_ips:
        left.append(f"{_plural(len(report.unknown_ips), 'unknown cluster address', 'unknown cluster addresses')} "
                    f"left out")
    if left:
        lines.append("Not written: " + "; ".join(left) + " (listed below).")
    return lines


def policies_line(policies: PolicySetDiff) -> str:
    counts = policies.counts()
    changed = [f"{counts[c.value]} {c.value}" for c in (Change.ADDED, Change.CHANGED, Change.REMOVED)
               if counts[c.value]]
    return f"Policies: {', '.join(changed) or 'none changed'} ({counts[Change.UNCHANGED.value]} unchanged)."


def impact_summary(impact: Impact) -> list[str]:
    """What replacing the set in force does to traffic, worst first."""
    if impact.breaking:
        breaks = (f"BREAKS {_plural(len(impact.breaking), 'connection')} seen in the recorded traffic: "
                  f"{impact.flows_broken} of {impact.flows} recorded flows would be denied.")
    else:
        breaks = f"Breaks nothing seen: of {impact.flows} recorded flows, none allowed now would be denied."
    lines = [breaks]
    if impact.opening:
        lines.append(f"Newly allows {_plural(len(impact.opening), 'connection')} seen in the traffic that the "
                     f"policies in force deny ({impact.flows_opened} flows).")
    if impact.opened:
        more = " (search stopped at its cap: there may be more)" if impact.truncated else ""
        lines.append(f"Opens {_plural(len(impact.opened), 'connection')} never seen in the traffic "
                     f"(workload pair x declared port){more}.")
    else:
        lines.append("Opens nothing that was never seen" + (" (search stopped at its cap)." if impact.truncated
                                                            else "."))
    if impact.denied:
        lines.append(f"{_plural(len(impact.denied), 'connection')} seen in the traffic stay denied before and "
                     f"after.")
    return lines


def change_summary(policies: PolicySetDiff, impact: Impact) -> list[str]:
    return [policies_line(policies), *impact_summary(impact)]
