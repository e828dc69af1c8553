"""``netpol-gen shadow add|list|remove``: the named policy sets the store judges new traffic against."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from netpol_gen.cli.options import db_option, server_options


# each command imports the library where it runs: `netpol-gen --help` lists this group without it
@click.group("shadow")
def shadow_cmd() -> None:
    """Shadow sets: policies judged against every connection learnt after they were added, never enforced."""


@shadow_cmd.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR...")
@db_option
@server_options
def add(name: str, paths: tuple[str, ...], db_url: str | None, server_url: str | None, token: str | None) -> None:
    """Add set NAME from policy files or directories (validated first: a bad one stores nothing)."""
    from netpol_gen.service.shadow_source import read_documents, shadow_source

    documents = read_documents(paths)
    with shadow_source(db_url, server_url, token, writing=True) as source:
        added = source.add(name, " ".join(paths), documents)
    click.echo(f"shadow set {added.name}: {added.policies} policies from {added.source}; "
               "judging the connections learnt from now on")


@shadow_cmd.command("list")
@db_option
@server_options
def list_cmd(db_url: str | None, server_url: str | None, token: str | None) -> None:
    """The sets, with when each was added."""
    from netpol_gen.service.shadow_source import shadow_source

    with shadow_source(db_url, server_url, token) as source:
        sets = source.sets()
    for found in sets:
        added = datetime.fromtimestamp(found.added_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"{found.name}\t{found.policies} policies\tadded {added}\t{found.source}")
    if not sets:
        click.echo("no shadow sets")


@shadow_cmd.command("remove")
@click.argument("name")
@db_option
@server_options
def remove(name: str, db_url: str | None, server_url: str | None, token: str | None) -> None:
    """Forget set NAME and what it would have denied."""
    from netpol_gen.service.shadow_source import shadow_source

    with shadow_source(db_url, server_url, token, writing=True) as source:
        source.remove(name)
    click.echo(f"shadow set {name} removed")
