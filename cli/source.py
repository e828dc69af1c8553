"""Where a reading command gets what was learnt: a local store (``--db``) or a server (``--server``).

Both answer with the same library objects (the server sends them through
:mod:`netpol_gen.store.wire`), so commands run synthesis and formatting locally either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import click

from netpol_gen.store.client import ENV_TOKEN, Retry, StoreClient
from netpol_gen.store.db import Store, default_url, open_store
from netpol_gen.store.learned import load_learned
from netpol_gen.store.progress import Deliveries, read_deliveries
from netpol_gen.store.query import EdgeRow, list_edges
from netpol_gen.synthesizer.model import LearnedInputs

_F = TypeVar("_F", bound=Callable[..., object])


class LearningSource(Protocol):
    def learned(self) -> LearnedInputs: ...
    def edges(self, namespace: str | None = None) -> list[EdgeRow]: ...
    def deliveries(self) -> Deliveries: ...


@dataclass
class LocalSource:
    store: Store

    def learned(self) -> LearnedInputs:
        return load_learned(self.store)

    def edges(self, namespace: str | None = None) -> list[EdgeRow]:
        with self.store.reading() as conn:
            return list_edges(conn, namespace)

    def deliveries(self) -> Deliveries:
        with self.store.reading() as conn:
            return read_deliveries(conn)


def server_options(command: _F) -> _F:
    """``--server URL`` and ``--token`` (or ``$NETPOL_GEN_TOKEN``), the remote alternative to ``--db``."""
    command = click.option("--token", default=None, envvar=ENV_TOKEN, show_envvar=True,
                           help="Bearer token for --server.")(command)
    return click.option("--server", "server_url", default=None, metavar="URL",
                        help="Read from `netpol-gen serve` at this URL instead of a local --db.")(command)


@contextmanager
def learning_source(db_url: str | None, server_url: str | None, token: str | None) -> Iterator[LearningSource]:
    if server_url and db_url:
        raise click.UsageError("--db and --server exclude each other")
    if server_url:
        if not token:
            raise click.UsageError(f"--server needs --token or ${ENV_TOKEN}")
        with StoreClient(server_url, token, retry=Retry(deadline=10.0)) as client:
            yield client
        return
    store = open_store(db_url or default_url(), create=False)
    try:
        yield LocalSource(store)
    finally:
        store.close()


def open_learned(db_url: str | None, server_url: str | None, token: str | None) -> LearnedInputs:
    """Everything the synthesizer needs, from the store or the server."""
    with learning_source(db_url, server_url, token) as source:
        return source.learned()
