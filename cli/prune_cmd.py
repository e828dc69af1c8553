"""``netpol-gen prune``: one pass of retention over a store (what ``serve --retain`` runs periodically)."""

from __future__ import annotations

import time

import click

from netpol_gen.cli.options import db_option


@click.command("prune")
@db_option
@click.option("--retain", required=True, metavar="DURATION",
              help="Keep per-batch ids and hourly shadow denials for this long (e.g. 30d; at least 1d); "
                   "older ones are summed (deliveries) or merged per day (denials).")
def prune_cmd(db_url: str | None, retain: str) -> None:
    """Bound the store's growth: roll up what is older than --retain (see README, Retention)."""
    # the library here, not at the top: `netpol-gen --help` lists this command without loading it
    from netpol_gen.store.db import open_store
    from netpol_gen.store.retention import parse_duration, prune

    seconds = parse_duration(retain)
    store = open_store(db_url, create=False)
    try:
        report = prune(store, seconds, time.time())
    finally:
        store.close()
    click.echo(f"pruned: {report.batches} batch ids summed into delivery totals, "
               f"{report.denials} shadow denial rows merged into days")
