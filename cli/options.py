"""Options shared by several commands, declared once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from netpol_gen.errors import InputError
from netpol_gen.names import ENV_TOKEN, ENV_URL

if TYPE_CHECKING:
    from netpol_gen.synthesizer.options import Options

_F = TypeVar("_F", bound=Callable[..., object])

db_option = click.option(
    "--db", "db_url", default=None, metavar="URL",
    help=f"Store: sqlite:///PATH or postgresql+psycopg://... [default: ${ENV_URL} or sqlite:///netpol-gen.db]",
)


def server_options(command: _F) -> _F:
    """``--server URL`` and ``--token`` (or ``$NETPOL_GEN_TOKEN``), the remote alternative to ``--db``."""
    command = click.option("--token", default=None, envvar=ENV_TOKEN, show_envvar=True,
                           help="Bearer token for --server.")(command)
    return click.option("--server", "server_url", default=None, metavar="URL",
                        help="Read from `netpol-gen serve` at this URL instead of a local --db.")(command)


def parse_listen(value: str, option: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for IPv6) as (host, port); BadParameter naming ``option``."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"expected [HOST:]PORT, got {value!r}", param_hint=option)
    return host.strip("[]") or default_host, int(port)

_SYNTHESIS_OPTIONS = (
    click.option("--namespace", "namespaces", multiple=True, help="Only these namespaces (repeatable)."),
    click.option("--exclude-namespace", "excluded", multiple=True,
                 help="Skip these namespaces (repeatable) [default: kube-system]."),
    click.option("--since", default=None, help="Learning window start (ISO 8601)."),
    click.option("--until", default=None, help="Learning window end (ISO 8601)."),
    click.option("--min-connections", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Ignore edges seen fewer times."),
    click.option("--ingress-only", is_flag=True),
    click.option("--egress-only", is_flag=True),
    click.option("--default-deny", is_flag=True, help="Also emit a default-deny policy per namespace."),
    click.option("--isolate-idle", is_flag=True, help="Also isolate workloads seen with no traffic."),
    click.option("--include-unknown", is_flag=True, help="Allow unknown cluster IPs as ipBlocks."),
    click.option("--named-ports/--numbered-ports", default=True, show_default=True,
                 help="Use container port names when every destination pod agrees."),
    click.option("--dns-tcp/--no-dns-tcp", default=True, show_default=True,
                 help="Also allow TCP to a resolver seen on UDP 53 (large answers are retried over TCP)."),
    click.option("--port-range-min", type=click.IntRange(min=2), default=None,
                 help="Fold runs of at least N contiguous ports into port+endPort."),
    click.option("--cidr-aggregate", type=click.IntRange(1, 32), default=None,
                 help="Fold external IPv4 addresses sharing this prefix length into one ipBlock."),
    click.option("--fold-namespaces", is_flag=True,
                 help="Write peers that together select every pod of a namespace as that namespace "
                      "(admits workloads created there later; the report lists each one)."),
)


def _epoch(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-11-22T00:00:00Z)") from None


def _options(namespaces: tuple[str, ...], excluded: tuple[str, ...], since: str | None, until: str | None,
             min_connections: int, ingress_only: bool, egress_only: bool, default_deny: bool, isolate_idle: bool,
             include_unknown: bool, named_ports: bool, dns_tcp: bool, port_range_min: int | None,
             cidr_aggregate: int | None, fold_namespaces: bool) -> Options:
    from netpol_gen.synthesizer.options import Options  # here: declaring the options must not load the synthesizer

    if ingress_only and egress_only:
        raise click.UsageError("--ingress-only and --egress-only exclude each other")
    return Options(
        namespaces=frozenset(namespaces),
        exclude_namespaces=frozenset(excluded) if excluded else Options().exclude_namespaces,
        since=_epoch(since, "--since"),
        until=_epoch(until, "--until"),
        min_connections=min_connections,
        ingress_only=ingress_only,
        egress_only=egress_only,
        default_deny=default_deny,
        isolate_idle=isolate_idle,
        include_unknown=include_unknown,
        named_ports=named_ports,
        dns_tcp=dns_tcp,
        port_range_min=port_range_min,
        cidr_aggregate=cidr_aggregate,
        fold_namespaces=fold_namespaces,
    )


def synthesis_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Declare the synthesizer's options on ``command``, which receives them as one ``options: Options``
    (so ``export`` and ``diff --db`` cannot drift apart)."""
    names = ("namespaces", "excluded", "since", "until", "min_connections", "ingress_only", "egress_only",
             "default_deny", "isolate_idle", "include_unknown", "named_ports", "dns_tcp", "port_range_min",
             "cidr_aggregate", "fold_namespaces")

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = _options(**{name: kwargs.pop(name) for name in names})
        return command(options=options, **kwargs)

    for option in reversed(_SYNTHESIS_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
