"""``diff --format text``: coloured for a terminal (click strips the colour elsewhere)."""

from __future__ import annotations

import click

from netpol_gen.evaluator.impact import FlowChange, Impact
from netpol_gen.evaluator.policy_diff import Change
from netpol_gen.review.diff import DiffReport
from netpol_gen.review.summary import change_summary

_CHANGE_COLOURS = {Change.ADDED: "green", Change.REMOVED: "red", Change.CHANGED: "yellow"}


def _diff_line(line: str) -> str:
    if line.startswith(("+++", "---")):
        return click.style(line, bold=True)
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    if line.startswith("+"):
        return click.style(line, fg="green")
    if line.startswith("-"):
        return click.style(line, fg="red")
    return line


def search_note(impact: Impact) -> str:
    """How the never-seen openings were searched, in words (the summary gives what was found)."""
    note = (f"\nSearched for connections never seen: {impact.judgements} workload pairs x declared ports, "
            f"those of the {impact.affected_workloads} of {impact.workloads} workloads whose policies change")
    if impact.truncated:
        note += f"; stopped at the cap of {impact.max_judgements}, so the list may be incomplete"
    return note + "."


def _groups(title: str, colour: str, groups: list[FlowChange], flows: int) -> list[str]:
    if not groups:
        return []
    lines = ["", click.style(f"{title}: {flows} flows, {len(groups)} connections", fg=colour, bold=True)]
    for group in groups:
        via = f" via {', '.join(sorted(group.services))}" if group.services else ""
        lines.append(f"  {group.connection}  x{group.flows}{via}")
        lines += [f"      now:      {reason}" for reason in sorted(group.now)]
        lines += [f"      proposed: {reason}" for reason in sorted(group.proposed)]
    return lines


def render(report: DiffReport) -> str:
    policies, impact = report.policies, report.impact
    lines = [click.style(line, bold=True) for line in change_summary(policies, impact)]
    for change in policies.changes:
        if change.change is Change.UNCHANGED:
            continue
        lines += ["", click.style(f"{change.change.value} {change.key}", fg=_CHANGE_COLOURS[change.change], bold=True)]
        lines += [_diff_line(line) for line in change.diff.splitlines()]
    lines += ["", click.style(
        f"recorded flows: {impact.flows}  would be denied: {impact.flows_broken}"
        f"  newly allowed: {impact.flows_opened}", bold=True)]
    lines += _groups("would be denied (these would break)", "red", impact.breaking, impact.flows_broken)
    lines += _groups("newly allowed", "yellow", impact.opening, impact.flows_opened)
    if impact.opened:
        lines += ["", click.style(f"newly opened, never observed: {len(impact.opened)} workload pairs x ports",
                                  fg="yellow", bold=True)]
        for opened in impact.opened:
            name = f" ({opened.port_name})" if opened.port_name else ""
            lines.append(f"  {opened.connection}{name}: {opened.proposed}")
    lines.append(search_note(impact))
    return "\n".join(lines) + "\n"
