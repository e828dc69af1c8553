"""``netpol-gen flows``: the aggregated edges in the store, workload-level."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from netpol_gen.cli.options import db_option, server_options

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.model.identity import Identity
    from netpol_gen.model.listings import EdgeRow

# ``unanswered`` last: a CSV reader of the columns before it keeps working
_COLUMNS = ("source", "destination", "port", "protocol", "connections", "packets", "bytes", "first_seen",
            "last_seen", "names", "unanswered")


def _time(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _identity_dict(identity: Identity) -> dict[str, Any]:
    return {"kind": identity.kind.value, "namespace": identity.namespace, "workload_kind": identity.workload_kind,
            "workload_name": identity.workload_name, "node": identity.node, "ip": identity.ip}


def _flat(edge: EdgeRow) -> list[Any]:
    return [edge.src.describe(), edge.dst.describe(), edge.dst_port, edge.protocol, edge.connections,
            edge.packets, edge.bytes, _time(edge.first_seen), _time(edge.last_seen), " ".join(edge.dst_names),
            edge.unanswered]


def _print_table(edges: list[EdgeRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in _COLUMNS:
        right = column in ("connections", "unanswered", "bytes")
        table.add_column(column.replace("_", " "), justify="right" if right else "left")
    for edge in edges:
        table.add_row(*("" if value is None else str(value) for value in _flat(edge)))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@click.command("flows")
@db_option
@server_options
@click.option("--namespace", default=None, help="Only edges with an end in this namespace.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def flows_cmd(db_url: str | None, server_url: str | None, token: str | None, namespace: str | None, fmt: str) -> None:
    """List learnt connections: who talked to whom on which port, how often (and how many attempts were
    never answered), first and last seen."""
    from netpol_gen.service.source import learning_source

    with learning_source(db_url, server_url, token) as source:
        edges = source.edges(namespace)
    if fmt == "json":
        click.echo(json.dumps([
            {"source": _identity_dict(e.src), "destination": _identity_dict(e.dst), "port": e.dst_port,
             "protocol": e.protocol, "connections": e.connections, "unanswered": e.unanswered,
             "packets": e.packets, "bytes": e.bytes,
             "first_seen": _time(e.first_seen) or None, "last_seen": _time(e.last_seen) or None,
             "names": list(e.dst_names)}
            for e in edges
        ], indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_COLUMNS)
        writer.writerows(_flat(e) for e in edges)
    else:
        _print_table(edges)
