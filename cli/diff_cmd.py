"""``netpol-gen diff``: what would change if a proposed policy set replaced the one in force, policy by
policy (unified YAML diffs) and on the recorded traffic (flows cut, flows newly allowed, connectivity
newly opened that was never observed).

Exit 0 when nothing changes, 1 when something does, 3 when some recorded flow would be denied, 2 on bad
input. :func:`diff_sets` is the whole comparison given the two sets, the cluster and the flows; with
``--db`` the store supplies whichever of them is not given: the proposed set synthesized with
``export``'s options, the learned pods and Services as the cluster, the flows kept as evidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click

from netpol_gen.cli.options import db_option, synthesis_options
from netpol_gen.errors import InputError
from netpol_gen.evaluator import Cluster, Flow, iter_flows, load_cluster
from netpol_gen.evaluator.documents import Document
from netpol_gen.evaluator.flows import open_flows
from netpol_gen.evaluator.impact import FlowChange, Impact, compute_impact
from netpol_gen.evaluator.policy_diff import (
    Change,
    PolicyDocument,
    PolicySetDiff,
    diff_policy_sets,
    load_policy_documents,
    policy_documents,
)
from netpol_gen.store.db import open_store
from netpol_gen.store.learned import load_evidence, load_learned, load_services
from netpol_gen.synthesizer import Options, synthesize
from netpol_gen.synthesizer.verify import LearnedCluster

EXIT_NO_CHANGE, EXIT_CHANGES, EXIT_FLOWS_CUT = 0, 1, 3


@dataclass
class DiffReport:
    policies: PolicySetDiff
    impact: Impact

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


# --- the policies in force in a live cluster ------------------------------------------------------


def fetch_policies_in_force(page_size: int = 500) -> list[PolicyDocument]:
    """Every NetworkPolicy of every namespace, read (list only) from the API server, page by page."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from netpol_gen.collector.kube import api_client  # the kubernetes client is slow to import: only here

    try:
        api = api_client()
    except InputError as exc:
        raise InputError(exc.what, where="--against-cluster") from None
    items: list[Any] = []
    with api:
        networking = client.NetworkingV1Api(api)
        token = None
        try:
            while True:
                page = networking.list_network_policy_for_all_namespaces(limit=page_size, _continue=token)
                items.extend(page.items)
                token = page.metadata._continue if page.metadata is not None else None
                if not token:
                    break
        except ApiException as exc:
            raise InputError(f"listing NetworkPolicies failed: HTTP {exc.status} {exc.reason}",
                             where="--against-cluster") from None
        except HTTPError as exc:
            raise InputError(f"cannot reach the API server at {api.configuration.host}: {exc}",
                             where="--against-cluster") from None
        objects = [api.sanitize_for_serialization(item) for item in items]
    return policy_documents(
        Document(f"cluster:{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}",
                 {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **obj})
        for obj in objects
    )


# --- text ------------------------------------------------------------------------------------------

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


def _counts_line(policies: PolicySetDiff) -> str:
    return ", ".join(f"{n} {name}" for name, n in policies.counts().items())


def _text_groups(echo: Callable[[str], None], title: str, colour: str, groups: list[FlowChange], flows: int) -> None:
    if not groups:
        return
    echo("")
    echo(click.style(f"{title}: {flows} flows, {len(groups)} connections", fg=colour, bold=True))
    for group in groups:
        via = f" via {', '.join(sorted(group.services))}" if group.services else ""
        echo(f"  {group.connection}  x{group.flows}{via}")
        for reason in sorted(group.now):
            echo(f"      now:      {reason}")
        for reason in sorted(group.proposed):
            echo(f"      proposed: {reason}")


def _print_text(report: DiffReport, color: bool | None) -> None:
    def echo(message: str) -> None:
        click.echo(message, color=color)

    policies, impact = report.policies, report.impact
    echo(click.style(f"policies: {_counts_line(policies)}", bold=True))
    for change in policies.changes:
        if change.change is Change.UNCHANGED:
            continue
        echo("")
        echo(click.style(f"{change.change.value} {change.key}", fg=_CHANGE_COLOURS[change.change], bold=True))
        for line in change.diff.splitlines():
            echo(_diff_line(line))
    echo("")
    echo(click.style(
        f"recorded flows: {impact.flows}  would be denied: {impact.flows_broken}"
        f"  newly allowed: {impact.flows_opened}", bold=True))
    _text_groups(echo, "would be denied (these would break)", "red", impact.breaking, impact.flows_broken)
    _text_groups(echo, "newly allowed", "yellow", impact.opening, impact.flows_opened)
    if impact.opened:
        echo("")
        echo(click.style(f"newly opened, never observed: {len(impact.opened)} workload pairs x ports",
                         fg="yellow", bold=True))
        for opened in impact.opened:
            name = f" ({opened.port_name})" if opened.port_name else ""
            echo(f"  {opened.connection}{name}: {opened.proposed}")
    echo(_search_note(impact))


def _search_note(impact: Impact) -> str:
    note = (f"\nnever-observed connectivity: {impact.affected_workloads} of {impact.workloads} workloads have "
            f"changed policies; {impact.judgements} workload pair x declared port judgements")
    if impact.truncated:
        note += f" (stopped at the cap of {impact.max_judgements}: the list may be incomplete)"
    return note


# --- markdown (a pull-request comment) -------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_groups(title: str, groups: list[FlowChange], flows: int) -> list[str]:
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


def _markdown(report: DiffReport) -> str:
    policies, impact = report.policies, report.impact
    lines = ["## netpol-gen diff", "",
             f"**Policies:** {_counts_line(policies)}. **Recorded flows:** {impact.flows}, "
             f"**{impact.flows_broken} would be denied**, {impact.flows_opened} newly allowed; "
             f"{len(impact.opened)} never-observed workload pairs x ports newly opened.", ""]
    changed = [c for c in policies.changes if c.change is not Change.UNCHANGED]
    if changed:
        lines += ["### Policies", "", "| policy | change |", "|---|---|"]
        lines += [f"| `{change.key}` | {change.change.value} |" for change in changed]
        lines.append("")
        for change in changed:
            lines += [f"#### {change.change.value}: `{change.key}`", "", "```diff", change.diff.rstrip("\n"), "```", ""]
    lines += _markdown_groups("Flows that would break", impact.breaking, impact.flows_broken)
    lines += _markdown_groups("Flows newly allowed", impact.opening, impact.flows_opened)
    if impact.opened:
        lines += ["### Newly opened, never observed", "",
                  "| source | destination | port | allowed by |", "|---|---|---|---|"]
        for opened in impact.opened:
            c = opened.connection
            port = f"{c.protocol}/{c.port}" + (f" ({opened.port_name})" if opened.port_name else "")
            lines.append(f"| `{c.src}` | `{c.dst}` | {port} | {_cell(opened.proposed)} |")
        lines.append("")
    lines.append(f"_{_search_note(impact).strip()}_")
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------------


def _emit(report: DiffReport, fmt: str, color: bool | None) -> None:
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif fmt == "markdown":
        click.echo(_markdown(report))
    else:
        _print_text(report, color)


@click.command("diff")
@click.option("--proposed", multiple=True, type=str,
              help="Proposed NetworkPolicy YAML/JSON file or directory; repeatable [default with --db: synthesized "
                   "from the store with the options below].")
@click.option("--against", multiple=True, type=str,
              help="The policies in force, as a file or directory; repeatable.")
@click.option("--against-cluster", is_flag=True,
              help="Read the policies in force from the cluster (kubeconfig or in-cluster; read-only).")
@click.option("--cluster", "clusters", multiple=True, type=str,
              help="Cluster snapshot (kubectl get ... -o yaml|json) file or directory; repeatable "
                   "[default with --db: the pods and Services the store learnt].")
@click.option("--flows", "flows_path", type=str,
              help="Recorded flows as JSONL ('-' for stdin) [default with --db: the store's sample flows].")
@db_option
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--color/--no-color", default=None, help="Colour the text output (default: on a terminal).")
@synthesis_options
def diff(proposed: tuple[str, ...], against: tuple[str, ...], against_cluster: bool, clusters: tuple[str, ...],
         flows_path: str | None, db_url: str | None, fmt: str, color: bool | None, options: Options) -> None:
    """Show what replacing the policies in force by the proposed ones would change."""
    if bool(against) == against_cluster:
        raise InputError("give the policies in force with --against FILE|DIR or --against-cluster (one of them)")
    if db_url is None and not (proposed and clusters and flows_path):
        raise InputError("give --proposed, --cluster and --flows, or --db to take what is missing from the store")
    current = fetch_policies_in_force() if against_cluster else load_policy_documents(against)
    learned = _Learned(db_url) if db_url is not None else None
    proposed_set = load_policy_documents(proposed) if proposed or learned is None else learned.proposed(options)
    cluster = load_cluster(clusters) if clusters or learned is None else learned.cluster()
    if flows_path is None and learned is not None:
        report = diff_sets(current, proposed_set, cluster, learned.flows())
    else:
        stream, name = open_flows(flows_path or "-")
        with stream:
            report = diff_sets(current, proposed_set, cluster, iter_flows(stream, name))
    _emit(report, fmt, color)
    raise SystemExit(report.exit_code)


class _Learned:
    """What ``--db`` supplies: the proposed set synthesized from the store, the learned pods and
    Services as the cluster, the sample flows as the recorded traffic. Read once, on first use."""

    def __init__(self, db_url: str) -> None:
        store = open_store(db_url, create=False)
        try:
            self.inputs = load_learned(store)
            self.services = load_services(store)
            self.evidence = load_evidence(store)
        finally:
            store.close()

    def proposed(self, options: Options) -> list[PolicyDocument]:
        synthesis = synthesize(self.inputs, options)
        for denied in synthesis.report.verification.denied:
            click.echo(f"netpol-gen: BUG: generated policies deny observed traffic: {denied.describe()}", err=True)
        return policy_documents(Document(f"synthesized:{p['metadata']['namespace']}/{p['metadata']['name']}", p)
                                for p in synthesis.policies)

    def cluster(self) -> Cluster:
        return LearnedCluster(self.inputs, self.services).cluster

    def flows(self) -> list[Flow]:
        return self.evidence
