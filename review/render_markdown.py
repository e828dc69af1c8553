"""``diff --format markdown``: a pull-request comment."""

from __future__ import annotations

from netpol_gen.evaluator.impact import FlowChange
from netpol_gen.evaluator.policy_diff import Change
from netpol_gen.review.diff import DiffReport
from netpol_gen.review.render_mermaid import flowchart
from netpol_gen.review.render_text import search_note
from netpol_gen.review.summary import change_summary


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _groups(title: str, groups: list[FlowChange], flows: int) -> list[str]:
    if not groups:
        return []
    lines = [f"### {title} ({flows} flows)", "",
             "| source | destination | port | flows | via | now | proposed |", "|---|---|---|---:|---|---|---|"]
    for group in groups:
        c = group.connection
        lines.append(
            f"| `{c.src}` | `{c.dst}` | {c.protocol}/{c.port} | {group.flows} | "
            f"{_cell(', '.join(sorted(group.services)))} | {_cell('; '.join(sorted(group.now)))} | "
            f"{_cell('; '.join(sorted(group.proposed)))} |"
        )
    return [*lines, ""]


def render(report: DiffReport) -> str:
    policies, impact = report.policies, report.impact
    lines = ["## netpol-gen diff", "", *(f"- {line}" for line in change_summary(policies, impact)), ""]
    chart = flowchart(impact)
    if chart is not None:
        lines += ["### Changed edges", "", "```mermaid", chart.rstrip("\n"), "```", ""]
    changed = [c for c in policies.changes if c.change is not Change.UNCHANGED]
    if changed:
        lines += ["### Policies", "", "| policy | change |", "|---|---|"]
        lines += [f"| `{change.key}` | {change.change.value} |" for change in changed]
        lines.append("")
        for change in changed:
            lines += [f"#### {change.change.value}: `{change.key}`", "", "```diff", change.diff.rstrip("\n"), "```", ""]
    lines += _groups("Flows that would break", impact.breaking, impact.flows_broken)
    lines += _groups("Flows newly allowed", impact.opening, impact.flows_opened)
    if impact.opened:
        lines += ["### Newly opened, never observed", "",
                  "| source | destination | port | allowed by |", "|---|---|---|---|"]
        for opened in impact.opened:
            c = opened.connection
            port = f"{c.protocol}/{c.port}" + (f" ({opened.port_name})" if opened.port_name else "")
            lines.append(f"| `{c.src}` | `{c.dst}` | {port} | {_cell(opened.proposed)} |")
        lines.append("")
    lines.append(f"_{search_note(impact).strip()}_")
    return "\n".join(lines) + "\n"
