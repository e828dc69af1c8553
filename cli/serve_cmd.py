"""``netpol-gen serve``: run the central store for collectors and the remote CLI (see store/server.py)."""

from __future__ import annotations

import click
import uvicorn

from netpol_gen.cli.options import db_option, parse_listen
from netpol_gen.service.auth import Authenticator, SharedSecret, TokenReview, kubernetes_reviewer, read_token_file
from netpol_gen.service.server import Limits, create_app
from netpol_gen.store.db import open_store

DEFAULT_LISTEN = "0.0.0.0:8080"


def _authenticator(token_file: str | None, tokenreview: bool, writers: tuple[str, ...], readers: tuple[str, ...],
                   audiences: tuple[str, ...]) -> Authenticator:
    if (token_file is None) == (not tokenreview):
        raise click.UsageError("choose one way to check tokens: --token-file FILE or --tokenreview")
    if token_file is not None:
        if writers or readers:
            raise click.UsageError("--writer/--reader go with --tokenreview (a shared secret may read and write)")
        return SharedSecret(read_token_file(token_file))
    if not writers and not readers:
        raise click.UsageError("--tokenreview needs --writer and/or --reader USER (e.g. "
                               "system:serviceaccount:netpol-gen:netpol-gen-collector)")
    return TokenReview(kubernetes_reviewer(audiences), frozenset(writers), frozenset(readers))


@click.command("serve")
@db_option
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="[HOST:]PORT")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Accept the bearer token in this file (shared secret: reads and writes).")
@click.option("--tokenreview", is_flag=True, help="Check bearer tokens with the Kubernetes TokenReview API.")
@click.option("--writer", "writers", multiple=True, metavar="USER",
              help="With --tokenreview: a user allowed to post batches (repeatable).")
@click.option("--reader", "readers", multiple=True, metavar="USER",
              help="With --tokenreview: a user allowed to read what was learnt (repeatable).")
@click.option("--audience", "audiences", multiple=True, default=("netpol-gen",), show_default=True,
              help="With --tokenreview: token audiences accepted (repeatable).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.01), default=16.0, show_default=True,
              help="Largest request body as sent; 8 times this once decompressed.")
@click.option("--writers", "write_slots", type=click.IntRange(min=1), default=None,
              help="Concurrent write transactions [default: 1; more only on PostgreSQL].")
def serve_cmd(db_url: str | None, listen: str, token_file: str | None, tokenreview: bool, writers: tuple[str, ...],
              readers: tuple[str, ...], audiences: tuple[str, ...], max_body_mb: float,
              write_slots: int | None) -> None:
    """Serve the store over HTTP: collectors post batches, `--server` commands read what was learnt."""
    authenticator = _authenticator(token_file, tokenreview, writers, readers, audiences)
    host, port = parse_listen(listen, "--listen")
    store = open_store(db_url)
    max_body = int(max_body_mb * (1 << 20))
    app = create_app(store, authenticator, limits=Limits(max_body, 8 * max_body), writers=write_slots)
    click.echo(f"serving {store.url} on http://{host}:{port}", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    finally:
        store.close()
