"""``netpol-gen status``: is learning still finding new connections, or has it settled?

An edge is new when it was first seen; the command counts edges by the hour of their first
sighting and says how many appeared in the last hour. "Settled" needs both no new edge and
deliveries still arriving: a silent store is not a settled one (collectors may be down).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import click

from netpol_gen.cli.options import db_option, server_options
from netpol_gen.service.source import learning_source
from netpol_gen.store.progress import Deliveries
from netpol_gen.store.query import EdgeRow

HOUR = 3600.0


@dataclass(frozen=True)
class HourCount:
    hour: str  # start of the hour, UTC, ISO 8601
    new_edges: int
    total_edges: int  # edges first seen up to the end of this hour


@dataclass(frozen=True)
class Status:
    state: str  # empty | idle | learning | settled
    edges: int
    new_last_hour: int
    last_new_edge: str | None
    deliveries: int
    flows: int
    last_delivery: str | None
    timeline: list[HourCount]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(edges: list[EdgeRow], new_last_hour: int, deliveries: Deliveries, now: float) -> str:
    if not edges and not deliveries.batches:
        return "empty"
    if deliveries.last is None or deliveries.last < now - HOUR:
        return "idle"
    return "learning" if new_last_hour else "settled"


def summarize(edges: list[EdgeRow], deliveries: Deliveries, now: float, hours: int) -> Status:
    """The status at ``now``, with a timeline of the last ``hours`` hours (hours without new edges left out)."""
    firsts = sorted(e.first_seen for e in edges if e.first_seen is not None)
    start = (now // HOUR - hours + 1) * HOUR
    total = sum(1 for e in edges if e.first_seen is None or e.first_seen < start)
    per_hour: dict[float, int] = {}
    for ts in firsts:
        if ts >= start:
            per_hour[ts // HOUR * HOUR] = per_hour.get(ts // HOUR * HOUR, 0) + 1
    timeline = []
    for hour, count in sorted(per_hour.items()):
        total += count
        timeline.append(HourCount(_iso(hour) or "", count, total))
    new_last_hour = sum(1 for ts in firsts if ts >= now - HOUR)
    return Status(_state(edges, new_last_hour, deliveries, now), len(edges), new_last_hour,
                  _iso(firsts[-1] if firsts else None), deliveries.batches, deliveries.flows,
                  _iso(deliveries.last), timeline)


_VERDICT = {
    "empty": "nothing learnt yet; are the collectors running and shipping to this store?",
    "idle": "no delivery in the last hour: check that the collectors are running",
    "learning": "new connections appeared in the last hour",
    "settled": "no new connection in the last hour while deliveries continue",
}


def _print(status: Status, hours: int) -> None:
    click.echo(f"edges: {status.edges} (last new one first seen {status.last_new_edge or 'never'})")
    click.echo(f"deliveries: {status.deliveries} batches and imports, {status.flows} flows, "
               f"last at {status.last_delivery or 'never'}")
    click.echo(f"new edges by hour first seen (UTC, last {hours} h):")
    for row in status.timeline:
        click.echo(f"  {row.hour}  +{row.new_edges:<6} {row.total_edges}")
    if not status.timeline:
        click.echo("  (none)")
    click.echo(f"new edges in the last hour: {status.new_last_hour}")
    click.echo(f"{status.state}: {_VERDICT[status.state]}")


@click.command("status")
@db_option
@server_options
@click.option("--hours", type=click.IntRange(1, 24 * 90), default=24, show_default=True,
              help="How far back the timeline goes.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(db_url: str | None, server_url: str | None, token: str | None, hours: int, fmt: str) -> None:
    """Learning progress: edges over time and new edges in the last hour, to tell when learning has settled."""
    with learning_source(db_url, server_url, token) as source:
        edges, deliveries = source.edges(), source.deliveries()
    status = summarize(edges, deliveries, time.time(), hours)
    if fmt == "json":
        click.echo(json.dumps(asdict(status), indent=2))
    else:
        _print(status, hours)
