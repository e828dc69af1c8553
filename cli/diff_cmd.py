"""``netpol-gen diff``: parse, call :func:`netpol_gen.review.diff.review_change`, print one renderer's output.

Exit 0 when nothing changes, 1 when something does, 3 when some recorded flow would be denied, 2 on bad
input.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.options import db_option, server_options, synthesis_options

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.service.source import LearningSource
    from netpol_gen.synthesizer import Options

FORMATS = ("text", "markdown", "json")  # each rendered by netpol_gen.review.render_<format>.render


@contextmanager
def _optional_source(db_url: str | None, server_url: str | None, token: str | None) -> Iterator[LearningSource | None]:
    if db_url is None and server_url is None:
        yield None
        return
    from netpol_gen.service.source import learning_source

    with learning_source(db_url, server_url, token) as source:
        yield source


@click.command("diff")
@click.option("--proposed", multiple=True, type=str,
              help="Proposed NetworkPolicy YAML/JSON file or directory; repeatable [default with --db/--server: "
                   "synthesized from the store with the options below].")
@click.option("--against", multiple=True, type=str,
              help="The policies in force, as a file or directory; repeatable.")
@click.option("--against-cluster", is_flag=True,
              help="Read the policies in force from the cluster (kubeconfig or in-cluster; read-only).")
@click.option("--cluster", "clusters", multiple=True, type=str,
              help="Cluster snapshot (kubectl get ... -o yaml|json) file or directory; repeatable "
                   "[default with --db/--server: the pods and Services the store learnt].")
@click.option("--flows", "flows_path", type=str,
              help="Recorded flows as JSONL ('-' for stdin) [default with --db/--server: the store's sample flows].")
@db_option
@server_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--color/--no-color", default=None, help="Colour the text output (default: on a terminal).")
@synthesis_options
def diff(proposed: tuple[str, ...], against: tuple[str, ...], against_cluster: bool, clusters: tuple[str, ...],
         flows_path: str | None, db_url: str | None, server_url: str | None, token: str | None, fmt: str,
         color: bool | None, options: Options) -> None:
    """Show what replacing the policies in force by the proposed ones would change."""
    from netpol_gen.review.diff import DiffRequest, review_change

    render = importlib.import_module(f"netpol_gen.review.render_{fmt}").render
    request = DiffRequest(proposed, against, against_cluster, clusters, flows_path)
    with _optional_source(db_url, server_url, token) as source:
        report = review_change(request, source, options)
    for warning in report.warnings:
        click.echo(f"netpol-gen: {warning}", err=True)
    click.echo(render(report), nl=False, color=color)
    raise SystemExit(report.exit_code)
