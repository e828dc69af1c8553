"""``netpol-gen import``: captured traffic plus a cluster snapshot into the store, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from netpol_gen.errors import InputError
from netpol_gen.evaluator import load_cluster
from netpol_gen.store.db import ENV_URL, default_url, open_store
from netpol_gen.store.importer import ImportReport, Source, flow_file_reader, import_sources


@contextmanager
def _progress_opener(console: Console) -> Iterator[object]:
    """A progress bar over the bytes of each flow file read, shown only on a terminal."""
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:

        def open_text(path: str) -> IO[str]:
            try:
                return progress.open(path, "r", encoding="utf-8", description=path)
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror}", where=path) from None

        yield open_text


def _print_report(report: ImportReport) -> None:
    skipped = f" ({len(report.skipped)} already in the store: {', '.join(report.skipped)})" if report.skipped else ""
    click.echo(f"sources imported: {len(report.imported)}{skipped}")
    click.echo(f"packets read: {report.packets}")
    click.echo(f"flows: {report.flows} (duplicates dropped: {report.duplicates}, "
               f"to a Service without such port or backend: {report.service_unresolved})")
    click.echo(f"edges: {report.edges_new} new, {report.edges_updated} updated")
    click.echo(f"unknown cluster IPs: {report.unknown_ips}")
    click.echo(f"flows without direction: {report.no_direction}")
    click.echo(f"DNS names learnt: {report.dns_names}")


@click.command("import")
@click.option("--db", "db_url", default=None, metavar="URL",
              help=f"Store: sqlite:///PATH or postgresql+psycopg://... [default: ${ENV_URL} or sqlite:///netpol-gen.db]")
@click.option("--cluster", "clusters", multiple=True, required=True,
              help="Cluster snapshot (kubectl get ... -o yaml|json) file or directory; repeatable, over time.")
@click.option("--flows", "flow_files", multiple=True, help="Flows as JSONL (the format of `check`); repeatable.")
def import_cmd(db_url: str | None, clusters: tuple[str, ...], flow_files: tuple[str, ...]) -> None:
    """Attribute and aggregate captured traffic into the store; a file already imported is skipped."""
    cluster = load_cluster(clusters, require_pods=True)
    store = open_store(db_url or default_url())
    sources = [Source(path, "flows") for path in flow_files]
    console = Console(stderr=True)
    try:
        if console.is_terminal:
            with _progress_opener(console) as open_text:
                report = import_sources(store, cluster, sources, {"flows": flow_file_reader(open_text)})
        else:
            report = import_sources(store, cluster, sources, {"flows": flow_file_reader()})
    finally:
        store.close()
    _print_report(report)
