"""``netpol-gen watch``: the connections shadow sets would deny, one line per edge, as they arrive."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.options import db_option, server_options
from netpol_gen.names import UNKNOWN_SIDE

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.store.shadow import DeniedEdge

EXIT_DENIED = 1


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(edge: DeniedEdge, fmt: str) -> str:
    if fmt == "jsonl":
        record = asdict(edge) | {"policies": list(edge.policies), "first_seen": _time(edge.first_seen),
                                 "last_seen": _time(edge.last_seen)}
        return json.dumps(record, separators=(",", ":"))
    head = f"{edge.set}: {edge.src} -> {edge.dst} {edge.port}/{edge.protocol}"
    span = f"{_time(edge.first_seen)} .. {_time(edge.last_seen)}"
    if edge.side == UNKNOWN_SIDE:
        return f"{head} never answered: {edge.unanswered} attempts, {span}"
    unanswered = f" ({edge.unanswered} never answered)" if edge.unanswered else ""
    return (f"{head} denied on {edge.side} by {', '.join(edge.policies)}: {edge.connections} connections"
            f"{unanswered}, {span}")


@click.command("watch")
@db_option
@server_options
@click.option("--set", "set_name", default=None, help="Only this shadow set [default: all].")
@click.option("--since", default=None,
              help="From this long ago (1h, 30m, 7d) or this RFC 3339 time, to the minute over the last day and "
                   "to the hour before [default: all].")
@click.option("--follow", is_flag=True, help="Keep printing edges as they are denied (until SIGINT/SIGTERM).")
@click.option("--every", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="With --follow: seconds between reads.")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True)
@click.option("--fail-on-deny", is_flag=True, help=f"Exit {EXIT_DENIED} when some edge was printed (for CI).")
def watch_cmd(db_url: str | None, server_url: str | None, token: str | None, set_name: str | None,
              since: str | None, follow: bool, every: float, fmt: str, fail_on_deny: bool) -> None:
    """Edges a shadow set would deny: src, dst, port, protocol, the denying side and policies, first and
    last seen, connections; under set in-force also attempts never answered (denied in force)."""
    from netpol_gen.service.shadow_source import shadow_source
    from netpol_gen.service.watch import denied_stream, parse_since

    start = parse_since(since, time.time()) if since else None
    stop = threading.Event()
    if follow:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    printed = 0
    with shadow_source(db_url, server_url, token) as source:
        for edge in denied_stream(source, set_name, start, follow=follow, every=every, stop=stop):
            click.echo(_line(edge, fmt))
            printed += 1
    if fail_on_deny and printed:
        raise SystemExit(EXIT_DENIED)
