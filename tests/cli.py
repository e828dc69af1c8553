"""The one way tests run the command line: in-process through click's runner, stdout and stderr apart.

Stands in for a user's shell: the same ``cli`` entry point, arguments and environment, without a
subprocess per call. The outcome unpacks as ``code, out, err`` or reads as attributes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from click.testing import CliRunner

from netpol_gen.cli.main import cli


@dataclass(frozen=True)
class CliOutcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __iter__(self) -> Iterator[object]:
        return iter((self.exit_code, self.stdout, self.stderr))


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> CliOutcome:
    result = CliRunner(env=env).invoke(cli, list(args), input=input)
    return CliOutcome(result.exit_code, result.stdout, result.stderr, result.exception)
