"""``netpol-gen status``: is learning still finding new connections, or has it settled?
(:func:`netpol_gen.store.progress.summarize` decides; this prints it.)"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.options import db_option, server_options

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.store.progress import Status
    from netpol_gen.store.readiness import Readiness

_VERDICT = {
    "empty": "nothing learnt yet; are the collectors running and shipping to this store?",
    "idle": "no delivery in the last hour: check that the collectors are running",
    "learning": "new connections appeared in the last hour",
    "settled": "no new connection in the last hour while deliveries continue",
}


def _print(status: Status, hours: int) -> None:
    click.echo(f"edges: {status.edges} (last new one first seen {status.last_new_edge or 'never'})")
    learnt = ", ".join(f"{source} {count}" for source, count in status.learnt_from.items()) or "nothing"
    click.echo(f"edges learnt from: {learnt} ({status.established_only} never seen starting, "
               "only from tables of open connections)")
    click.echo(f"deliveries: {status.deliveries} batches and imports, {status.flows} flows, "
               f"last at {status.last_delivery or 'never'}")
    click.echo(f"collectors: {status.nodes} nodes, {len(status.behind)} behind")
    for lag in status.behind:
        every = f"every {lag.interval:.0f} s before" if lag.interval is not None else "interval unknown"
        click.echo(f"  behind: {lag.node} last delivered {lag.age:.0f} s ago ({every})")
    click.echo(f"new edges by hour first seen (UTC, last {hours} h):")
    for row in status.timeline:
        click.echo(f"  {row.hour}  +{row.new_edges:<6} {row.total_edges}")
    if not status.timeline:
        click.echo("  (none)")
    click.echo(f"new edges in the last hour: {status.new_last_hour}")
    click.echo(f"{status.state}: {_VERDICT[status.state]}")


def _print_readiness(readiness: Readiness) -> None:
    from netpol_gen.store.readiness import TREND_HOURS

    click.echo(f"trend: {readiness.trend} ({readiness.new_recent} new edges in the last {TREND_HOURS} h, "
               f"{readiness.new_before} in the {TREND_HOURS} h before)")
    click.echo(f"workloads seen talking: {readiness.workloads_seen} of {readiness.workloads_known} known")
    for workload in readiness.never_seen:
        click.echo(f"  warning: {workload} never seen talking (a job that runs rarely? its policy would allow "
                   "nothing it has not done)")
    for name, connections in readiness.denied_by_set.items():
        click.echo(f"shadow set {name}: would have denied {connections} connections (netpol-gen watch --set {name})")
    if readiness.unanswered:
        click.echo(f"denied in force: {readiness.unanswered} connection attempts never answered on "
                   f"{readiness.unanswered_edges} edges (netpol-gen watch --set in-force)")
    click.echo(f"recommendation: {readiness.recommendation} ({readiness.reason})")


@click.command("status")
@db_option
@server_options
@click.option("--hours", type=click.IntRange(1, 24 * 90), default=24, show_default=True,
              help="How far back the timeline goes.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(db_url: str | None, server_url: str | None, token: str | None, hours: int, fmt: str) -> None:
    """Learning progress: edges over time and new edges in the last hour, to tell when learning has settled."""
    from netpol_gen.service.status_report import status_report

    report = status_report(db_url, server_url, token, time.time(), hours)
    if fmt == "json":
        click.echo(json.dumps(asdict(report.status) | {"readiness": asdict(report.readiness)}, indent=2))
    else:
        _print(report.status, hours)
        _print_readiness(report.readiness)
