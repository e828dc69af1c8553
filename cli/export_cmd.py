"""``netpol-gen export``: least-privilege NetworkPolicies from what the store learnt.

The generated set is verified with the evaluator before anything is written: an observed connection
that the policies would deny is a bug, reported loudly with exit code 1 and no output written."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from netpol_gen.cli.atomic import write_files
from netpol_gen.cli.options import db_option
from netpol_gen.errors import InputError
from netpol_gen.store.db import open_store
from netpol_gen.store.learned import load_learned
from netpol_gen.synthesizer import Options, Report, render_yaml, synthesize


def _epoch(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-11-22T00:00:00Z)") from None


def _render(policies: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}, indent=2, sort_keys=True) + "\n"
    return render_yaml(policies)


def _files(policies: list[dict[str, Any]], layout: str, fmt: str) -> dict[str, str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        meta = policy["metadata"]
        key = meta["namespace"] if layout == "namespace" else f"{meta['namespace']}.{meta['name']}"
        groups.setdefault(key, []).append(policy)
    suffix = ".json" if fmt == "json" else ".yaml"
    return {key + suffix: _render(group, fmt) for key, group in groups.items()}


def _print_report(report: Report) -> None:
    echo = lambda text: click.echo(text, err=True)  # noqa: E731 - the report goes to stderr
    echo(f"policies: {report.policies}, rules: {report.rules}, peers: {report.peers}, "
         f"YAML lines: {report.yaml_lines}; verified {report.verification.judged} observed connections "
         f"({report.verification.evaluated} judgements)")
    if report.filtered_edges:
        echo(f"edges outside the window or below --min-connections: {report.filtered_edges}")
    for ip in report.unknown_ips:
        echo(f"left out: unknown cluster IP {ip} (held by no known pod at the time; --include-unknown to allow)")
    for edge in report.own_node:
        echo(f"allowed by the own-node rule: not written: {edge.describe()} (only seen between pods and their node)")
    for workload in report.idle:
        echo(f"no traffic seen, no policy (--isolate-idle to isolate): {workload}")
    for warning in report.warnings:
        echo(f"warning: {warning}")


@click.command("export")
@db_option
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write files here instead of YAML to stdout.")
@click.option("--layout", type=click.Choice(["namespace", "policy"]), default="namespace", show_default=True,
              help="With --output-dir: one file per namespace or per policy.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--namespace", "namespaces", multiple=True, help="Only these namespaces (repeatable).")
@click.option("--exclude-namespace", "excluded", multiple=True,
              help="Skip these namespaces (repeatable) [default: kube-system].")
@click.option("--since", default=None, help="Learning window start (ISO 8601).")
@click.option("--until", default=None, help="Learning window end (ISO 8601).")
@click.option("--min-connections", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ignore edges seen fewer times.")
@click.option("--ingress-only", is_flag=True)
@click.option("--egress-only", is_flag=True)
@click.option("--default-deny", is_flag=True, help="Also emit a default-deny policy per namespace.")
@click.option("--isolate-idle", is_flag=True, help="Also isolate workloads seen with no traffic.")
@click.option("--include-unknown", is_flag=True, help="Allow unknown cluster IPs as ipBlocks.")
@click.option("--named-ports/--numbered-ports", default=True, show_default=True,
              help="Use container port names when every destination pod agrees.")
@click.option("--port-range-min", type=click.IntRange(min=2), default=None,
              help="Fold runs of at least N contiguous ports into port+endPort.")
@click.option("--cidr-aggregate", type=click.IntRange(1, 32), default=None,
              help="Fold external IPv4 addresses sharing this prefix length into one ipBlock.")
def export_cmd(db_url: str | None, output_dir: Path | None, layout: str, fmt: str, namespaces: tuple[str, ...],
               excluded: tuple[str, ...], since: str | None, until: str | None, min_connections: int,
               ingress_only: bool, egress_only: bool, default_deny: bool, isolate_idle: bool,
               include_unknown: bool, named_ports: bool, port_range_min: int | None,
               cidr_aggregate: int | None) -> None:
    """Write minimal NetworkPolicies that allow exactly the traffic learnt."""
    if ingress_only and egress_only:
        raise click.UsageError("--ingress-only and --egress-only exclude each other")
    options = Options(
        namespaces=frozenset(namespaces),
        exclude_namespaces=frozenset(excluded) if excluded else Options().exclude_namespaces,
        since=_epoch(since, "--since"),
        until=_epoch(until, "--until"),
        min_connections=min_connections,
        ingress_only=ingress_only,
        egress_only=egress_only,
        default_deny=default_deny,
        isolate_idle=isolate_idle,
        include_unknown=include_unknown,
        named_ports=named_ports,
        port_range_min=port_range_min,
        cidr_aggregate=cidr_aggregate,
    )
    store = open_store(db_url, create=False)
    try:
        synthesis = synthesize(load_learned(store), options)
    finally:
        store.close()
    _print_report(synthesis.report)
    if not synthesis.ok:
        for denied in synthesis.report.verification.denied:
            click.echo(f"netpol-gen: BUG: generated policies deny observed traffic: {denied.describe()}", err=True)
        click.echo("netpol-gen: nothing written; please report this with the store attached", err=True)
        raise SystemExit(1)
    if output_dir is None:
        click.echo(_render(synthesis.policies, fmt), nl=False)
    else:
        write_files(output_dir, _files(synthesis.policies, layout, fmt))
        click.echo(f"wrote {len(synthesis.policies)} policies to {output_dir}", err=True)
