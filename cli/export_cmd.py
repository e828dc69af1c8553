"""``netpol-gen export``: least-privilege NetworkPolicies from what the store learnt.

The generated set is verified with the evaluator before anything is written: an observed connection
that the policies would deny is a bug, reported loudly with exit code 1 and no output written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.atomic import write_files
from netpol_gen.cli.options import db_option, server_options, synthesis_options
from netpol_gen.gc_pause import collector_paused
from netpol_gen.names import KUBERNETES, TARGETS

if TYPE_CHECKING:
    from netpol_gen.synthesizer import Options, Report


def _print_report(report: Report, workloads: int, verbose: bool) -> None:
    from netpol_gen.review.summary import export_summary

    echo = lambda text: click.echo(text, err=True)  # noqa: E731 - the report goes to stderr
    for line in export_summary(report, workloads):  # the plain summary first, the detail after
        echo(line)
    echo(f"policies: {report.policies}, rules: {report.rules}, peers: {report.peers}, "
         f"YAML lines: {report.yaml_lines}; verified {report.verification.judged} observed connections "
         f"({report.verification.evaluated} judgements)")
    if report.filtered_edges:
        echo(f"edges outside the window or below --min-connections: {report.filtered_edges}")
    for ip in report.unknown_ips:
        echo(f"left out: unknown cluster IP {ip} (held by no known pod at the time; --include-unknown to allow)")
    left = "allowed by the own-node rule: not written:"
    if verbose:
        for edge in report.own_node:
            echo(f"{left} {edge.describe()} (only seen between pods and their node)")
    elif report.own_node:  # kubelet probes: one per pod of a cluster, too many to list by default
        count = len(report.own_node)
        echo(f"{left} {count} node-to-pod edge{'s' if count != 1 else ''} only seen between pods and their node "
             f"(--verbose lists them)")
    for workload in report.idle:
        echo(f"no traffic seen, no policy (--isolate-idle to isolate): {workload}")
    for warning in report.warnings:
        echo(f"warning: {warning}")


@click.command("export")
@db_option
@server_options
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write files here instead of YAML to stdout.")
@click.option("--layout", type=click.Choice(["namespace", "policy"]), default="namespace", show_default=True,
              help="With --output-dir: one file per namespace or per policy.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--explain", is_flag=True,
              help="Above each rule, a YAML comment listing the observed edges it allows (counts, first/last seen).")
@click.option("--target", type=click.Choice(TARGETS), default=KUBERNETES, show_default=True,
              help="Policy kind: NetworkPolicy, CiliumNetworkPolicy or Calico projectcalico.org/v3 NetworkPolicy.")
@click.option("--fqdn-patterns", is_flag=True,
              help="--target cilium: fold two or more names under one parent domain into matchPattern '*.parent'.")
@click.option("--baseline", is_flag=True,
              help="Also a Baseline-tier ClusterNetworkPolicy holding the egress every namespace does alike "
                   "(e.g. DNS); policies of workloads doing only that leave egress to it.")
@click.option("-v", "--verbose", is_flag=True,
              help="List in the report each node-to-pod edge left to the own-node rule (else their number).")
@synthesis_options
def export_cmd(db_url: str | None, server_url: str | None, token: str | None, output_dir: Path | None, layout: str,
               fmt: str, explain: bool, target: str, fqdn_patterns: bool, baseline: bool, verbose: bool,
               options: Options) -> None:
    """Write minimal NetworkPolicies that allow exactly the traffic learnt."""
    if explain and fmt != "yaml":
        raise click.UsageError("--explain writes YAML comments: use it with --format yaml")
    if explain and target != KUBERNETES:
        raise click.UsageError("--explain annotates NetworkPolicy rules: use it with --target kubernetes")
    if baseline and target != KUBERNETES:
        raise click.UsageError("--baseline writes a ClusterNetworkPolicy over NetworkPolicies: use it with "
                               "--target kubernetes")
    # the library here, not at the top: `netpol-gen --help` lists this command without loading it
    from netpol_gen.service.source import open_learned
    from netpol_gen.synthesizer import synthesize
    from netpol_gen.synthesizer.render import render, render_files

    # the cyclic GC paused as for import: nearly all that reading and synthesis build survives to the
    # output, so its collections only traverse a growing heap (about 10% of export's CPU)
    with collector_paused():
        learned = open_learned(db_url, server_url, token)
        synthesis = synthesize(learned, options, target=target, fqdn_patterns=fqdn_patterns, baseline=baseline)
    evidence = synthesis.evidence if explain else None
    # the files (or stdout) first, the report after: a reader of stderr that went away must not stop
    # the files being written (the report's failure still makes the exit status non-zero)
    if synthesis.ok and output_dir is None:
        click.echo(render(synthesis.policies, fmt, evidence, synthesis.documents), nl=False)
    elif synthesis.ok and output_dir is not None:
        write_files(output_dir, render_files(synthesis.policies, layout, fmt, evidence, synthesis.documents))
    _print_report(synthesis.report, len(learned.workloads), verbose)
    if not synthesis.ok:
        click.echo("netpol-gen: nothing written; please report this with the store attached", err=True)
        raise SystemExit(1)
    if output_dir is not None:
        click.echo(f"wrote {len(synthesis.policies)} policies to {output_dir}", err=True)
