"""The ``netpol-gen`` command: a thin click shell over the library.

Each command lives in its own module and is registered here. Bad input raises an
:class:`~netpol_gen.errors.InputError`; this entry point turns it into one line on stderr and exit
code 2, so no user ever sees a traceback for a mistake in a file.
"""

from __future__ import annotations

import sys

import click

from netpol_gen import __version__
from netpol_gen.cli.check import check
from netpol_gen.cli.collect_cmd import collect_cmd
from netpol_gen.cli.diff_cmd import diff
from netpol_gen.cli.export_cmd import export_cmd
from netpol_gen.cli.flows_cmd import flows_cmd
from netpol_gen.cli.import_cmd import import_cmd
from netpol_gen.cli.serve_cmd import serve_cmd
from netpol_gen.cli.status_cmd import status_cmd
from netpol_gen.errors import InputError

EXIT_BAD_INPUT = 2


class _Group(click.Group):
    """Maps domain errors to one-line messages for every subcommand."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"netpol-gen: error: {exc.message}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except BrokenPipeError:  # `netpol-gen ... | head`: not an error
            sys.stderr.close()
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netpol-gen")
def cli() -> None:
    """Learn how workloads talk and write least-privilege Kubernetes NetworkPolicies."""


cli.add_command(check)
cli.add_command(import_cmd)
cli.add_command(flows_cmd)
cli.add_command(diff)
cli.add_command(export_cmd)
cli.add_command(collect_cmd)
cli.add_command(serve_cmd)
cli.add_command(status_cmd)


def main() -> None:
    cli(prog_name="netpol-gen")
