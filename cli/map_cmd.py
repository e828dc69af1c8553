"""``netpol-gen map``: parse, call :func:`netpol_gen.review.map_build.build_service_map`, write the page.

The page is written atomically (a reader sees the old file or the new one); the summary and the path
go to stderr, so the command fits a script that attaches the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.atomic import write_files
from netpol_gen.cli.options import db_option, server_options, synthesis_options

if TYPE_CHECKING:
    from netpol_gen.synthesizer import Options


@click.command("map")
@db_option
@server_options
@click.option("--proposed", multiple=True, type=str,
              help="Proposed NetworkPolicy file or directory; repeatable [default: synthesized from the store "
                   "with the options below]. Needs --against or --against-cluster.")
@click.option("--against", multiple=True, type=str,
              help="The policies in force, as a file or directory; repeatable: colour each edge by its fate.")
@click.option("--against-cluster", is_flag=True,
              help="Read the policies in force from the cluster (kubeconfig or in-cluster; read-only).")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write (self-contained: opens offline).")
@synthesis_options
def map_cmd(db_url: str | None, server_url: str | None, token: str | None, proposed: tuple[str, ...],
            against: tuple[str, ...], against_cluster: bool, output: Path, options: Options) -> None:
    """Draw what was learnt, or what a policy change does to it, as one HTML page."""
    # the library here, not at the top: `netpol-gen --help` lists this command without loading it
    from netpol_gen.review.map_build import MapRequest, build_service_map
    from netpol_gen.review.map_html import render_html
    from netpol_gen.service.source import learning_source

    request = MapRequest(proposed, against, against_cluster)
    with learning_source(db_url, server_url, token) as source:
        service_map = build_service_map(source, request, options)
    page = render_html(service_map)
    write_files(output.parent, {output.name: page})
    for warning in service_map.warnings:
        click.echo(f"netpol-gen: {warning}", err=True)
    for line in service_map.summary:
        click.echo(line, err=True)
    click.echo(f"map: {output}", err=True)
