"""``netpol-gen import``: captured traffic plus a cluster snapshot into the store, in one transaction."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, TypeVar

import click

from netpol_gen.cli.options import db_option, server_options
from netpol_gen.errors import InputError
from netpol_gen.gc_pause import collector_paused
from netpol_gen.names import ENV_TOKEN

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from rich.console import Console
    from rich.progress import Progress

    from netpol_gen.ingest.flowtrack import Hints
    from netpol_gen.ingest.importer import ImportReport
    from netpol_gen.ingest.sources import ReadProgress, Source

_R = TypeVar("_R")


class _BarProgress:
    """Progress on a terminal: bytes read for flow files, records (flows, DNS answers) for captures."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def open_binary(self, path: str) -> IO[bytes]:
        try:
            return self._progress.open(path, "rb", description=path)
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", where=path) from None

    def records(self, path: str, records: Iterator[_R]) -> Iterator[_R]:
        task = self._progress.add_task(f"{path} (records)", total=None)
        for count, record in enumerate(records, 1):
            if count % 10_000 == 0:
                self._progress.update(task, completed=count)
            yield record
        self._progress.remove_task(task)


def _terminal() -> Console | None:
    """rich's console on stderr when that is a terminal (for the progress bar), else None. rich (about
    20 ms CPU of start-up) is only imported when it may say yes: for a stream that is no tty it says no
    unless ``TTY_COMPATIBLE=1`` or ``FORCE_COLOR`` is set, and that no needs no rich to be said."""
    if not (sys.stderr.isatty() or os.environ.get("TTY_COMPATIBLE") == "1" or "FORCE_COLOR" in os.environ):
        return None
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


def _hints(conntrack_dumps: tuple[str, ...], ss_dumps: tuple[str, ...]) -> Hints:
    """The initiators the dumps name; without dumps none, and their readers (and XML parser) not loaded."""
    if not (conntrack_dumps or ss_dumps):
        return {}
    from netpol_gen.ingest.dumps import direction_hints, read_conntrack_dump, read_ss_dump

    return direction_hints([entry for path in conntrack_dumps for entry in read_conntrack_dump(path)],
                           [read_ss_dump(path) for path in ss_dumps])


def _run(store_url: str | None, clusters: tuple[str, ...], sources: list[Source], console: Console | None,
         hints: Hints) -> ImportReport:
    from netpol_gen.ingest.importer import import_sources
    from netpol_gen.ingest.sources import QuietProgress
    from netpol_gen.model import load_cluster
    from netpol_gen.store.db import open_store

    cluster = load_cluster(clusters, require_pods=True)
    store = open_store(store_url)
    try:
        if console is None:
            return import_sources(store, cluster, sources, QuietProgress(), hints)
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            progress: ReadProgress = _BarProgress(bar)
            return import_sources(store, cluster, sources, progress, hints)
    finally:
        store.close()


def _print_report(report: ImportReport) -> None:
    skipped = f" ({len(report.skipped)} already in the store: {', '.join(report.skipped)})" if report.skipped else ""
    click.echo(f"sources imported: {len(report.imported)}{skipped}")
    filtered = " (that passed the BPF filter)" if report.packets_filtered else ""
    click.echo(f"packets read: {report.packets}{filtered}")
    click.echo(f"flows: {report.flows} (duplicates dropped: {report.duplicates}, "
               f"to a Service without such port or backend: {report.service_unresolved})")
    click.echo(f"edges: {report.edges_new} new, {report.edges_updated} updated")
    click.echo(f"unknown cluster IPs: {report.unknown_ips}")
    resolved = f" ({report.resolved} more resolved by the conntrack/ss dumps)" if report.resolved else ""
    click.echo(f"flows without direction: {report.no_direction}{resolved}")
    click.echo(f"DNS names learnt: {report.dns_names}")


def _post(server_url: str, token: str, clusters: tuple[str, ...], sources: list[Source], hints: Hints,
          ca_file: str | None, retry_for: float) -> None:
    """Read every source into batches first (a bad one posts nothing), then post them as a collector does."""
    from netpol_gen.ingest.remote_import import post_prepared, prepare
    from netpol_gen.ingest.sources import QuietProgress
    from netpol_gen.model import load_cluster
    from netpol_gen.service.client import Retry, StoreClient

    cluster = load_cluster(clusters, require_pods=True)
    prepared = prepare(cluster, sources, QuietProgress(), hints)
    with StoreClient(server_url, token, retry=Retry(deadline=retry_for), ca_file=ca_file) as client:
        report = post_prepared(client, cluster, prepared)
    known = f" ({len(report.known)} already in the store: {', '.join(report.known)})" if report.known else ""
    click.echo(f"sources posted: {len(report.posted)}{known}")
    click.echo(f"flows: {report.flows}; edges: {report.edges}")


@click.command("import")
@db_option
@server_options
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="With --server: the bearer token is in this file.")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
              help="With --server: trust only this CA (PEM) for an https:// server.")
@click.option("--retry-for", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="With --server: seconds to keep retrying a batch the server cannot take yet.")
@click.option("--cluster", "clusters", multiple=True, required=True,
              help="Cluster snapshot (kubectl get ... -o yaml|json) file or directory; repeatable, over time.")
@click.option("--flows", "flow_files", multiple=True, help="Flows as JSONL (the format of `check`); repeatable.")
@click.option("--pcap", "captures", multiple=True,
              help="Capture (pcap/pcapng, e.g. tcpdump -i any -w FILE); repeatable.")
@click.option("--conntrack", "conntrack_dumps", multiple=True,
              help="`conntrack -L -o extended` (or `-o xml`) output taken at capture time: names the initiator "
                   "of connections the captures show without a handshake; repeatable.")
@click.option("--ss", "ss_dumps", multiple=True,
              help="`ss -tanp` output of one network namespace taken at capture time (a listening socket "
                   "marks the server's end), for the same purpose; repeatable, one file per namespace.")
# the cyclic GC paused for the whole run, from before the library loads: its modules, the snapshot and all
# that is read live until the write (import_sources pauses it throughout anyway), so collecting while they
# are built frees nothing (about 15 ms CPU of a tiny import's 0.3 s)
@collector_paused()
def import_cmd(db_url: str | None, server_url: str | None, token: str | None, token_file: str | None,
               ca_file: str | None, retry_for: float, clusters: tuple[str, ...], flow_files: tuple[str, ...],
               captures: tuple[str, ...], conntrack_dumps: tuple[str, ...], ss_dumps: tuple[str, ...]) -> None:
    """Attribute and aggregate captured traffic into the store; a file already imported is skipped.

    Import the captures of all nodes for the same period in one run: a connection seen on two
    nodes is then counted once (flows without a source port cannot be deduplicated). With --server,
    each file is posted as one collector batch whose id is its digest, so importing it again is a no-op.
    """
    from netpol_gen.ingest.sources import Source

    if server_url and db_url:
        raise InputError("--db and --server exclude each other")
    if (token_file or ca_file) and not server_url:
        raise InputError("--token-file and --ca-file go with --server")
    sources = [Source(path, "flows") for path in flow_files] + [Source(path, "pcap") for path in captures]
    hints = _hints(conntrack_dumps, ss_dumps)
    if server_url:
        from netpol_gen.service.auth import read_token_file  # here: an import into a local store sends no token

        secret = read_token_file(token_file) if token_file else token
        if not secret:
            raise InputError(f"--server needs --token-file, --token or ${ENV_TOKEN}")
        _post(server_url, secret, clusters, sources, hints, ca_file, retry_for)
        return
    console = _terminal()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _run(db_url, clusters, sources, console, hints)
    for warning in caught:
        click.echo(f"netpol-gen: warning: {warning.message}", err=True)
    _print_report(report)
