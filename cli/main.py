"""The ``netpol-gen`` command: a thin click shell over the library.

Each command lives in its own module and is registered here. Bad input raises an
:class:`~netpol_gen.errors.InputError`; this entry point turns it into one line on stderr and exit
code 2, so no user ever sees a traceback for a mistake in a file.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys

import click

from netpol_gen import __version__
from netpol_gen.errors import InputError

EXIT_BAD_INPUT = 2
# stdout or stderr closed by its reader (`| head`, `2>&1 | true`): what a shell reports for a command
# killed by SIGPIPE, so `set -o pipefail` sees output lost exactly as with coreutils
EXIT_READER_GONE = 128 + 13


# name -> "module:attribute". A command's module is imported only when that command runs (or help
# lists it): the collector pulls in scapy and the kubernetes client, which `check` has no use for.
COMMANDS = {
    "check": "netpol_gen.cli.check:check",
    "import": "netpol_gen.cli.import_cmd:import_cmd",
    "flows": "netpol_gen.cli.flows_cmd:flows_cmd",
    "export": "netpol_gen.cli.export_cmd:export_cmd",
    "diff": "netpol_gen.cli.diff_cmd:diff",
    "map": "netpol_gen.cli.map_cmd:map_cmd",
    "collect": "netpol_gen.cli.collect_cmd:collect_cmd",
    "serve": "netpol_gen.cli.serve_cmd:serve_cmd",
    "status": "netpol_gen.cli.status_cmd:status_cmd",
    "shadow": "netpol_gen.cli.shadow_cmd:shadow_cmd",
    "watch": "netpol_gen.cli.watch_cmd:watch_cmd",
    "prune": "netpol_gen.cli.prune_cmd:prune_cmd",
}


class _Group(click.Group):
    """Loads commands lazily and maps domain errors to one-line messages for every subcommand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # here, not at exit: a failed write must change the exit status
            return result
        except InputError as exc:
            click.echo(f"netpol-gen: error: {exc.message}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except BrokenPipeError:
            _silence("netpol-gen: error: output not delivered: its reader closed the pipe\n")
            ctx.exit(EXIT_READER_GONE)
        except OSError as exc:
            if exc.filename is not None:  # a file a command opened: that is a bug, not a full disk
                raise
            _silence(f"netpol-gen: error: cannot write the output: {exc.strerror}\n")
            ctx.exit(EXIT_BAD_INPUT)


def _silence(message: str) -> None:
    """Say ``message`` on stderr if it still has a reader, then point stdout and stderr at /dev/null, so
    the interpreter's last flush neither fails again nor prints a traceback of its own."""
    with contextlib.suppress(OSError):
        sys.stderr.write(message)
        sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # not a real file (click's test runner): nothing to do
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netpol-gen")
def cli() -> None:
    """Learn how workloads talk and write least-privilege Kubernetes NetworkPolicies."""


def main() -> None:
    """The installed script: one command, then the process ends."""
    try:
        cli(prog_name="netpol-gen")
    finally:
        # what the command leaves is freed with the process: frozen, it is skipped by the cyclic GC's last full
        # pass at exit over every module and object (about 18 ms CPU of a tiny import's 0.3 s). Only garbage
        # cycles still alive then go unfinalised; none of ours holds a resource (stores and files close explicitly)
        gc.freeze()
