"""Where a reading command gets what was learnt: a local store (``--db``) or a server (``--server``).

Both answer with the same library objects (the server sends them through
:mod:`netpol_gen.service.wire`, from a :class:`LocalSource` of its own), so commands run synthesis,
review and formatting locally either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from netpol_gen.errors import InputError
from netpol_gen.model.cluster import Service
from netpol_gen.model.dns import DnsAnswerSeen
from netpol_gen.model.flows import Flow
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.model.listings import Deliveries, EdgeRow
from netpol_gen.names import ENV_TOKEN
from netpol_gen.store.db import Store, open_store
from netpol_gen.store.learned import load_dns_answers, load_evidence, load_learned, load_services, read_api_servers
from netpol_gen.store.progress import read_deliveries
from netpol_gen.store.query import list_edges

if TYPE_CHECKING:  # the client (httpx, ssl) is imported only when --server is used: --db commands start faster
    from netpol_gen.service.client import StoreClient


class LearningSource(Protocol):
    def learned(self) -> LearnedInputs: ...
    def edges(self, namespace: str | None = None) -> list[EdgeRow]: ...
    def deliveries(self) -> Deliveries: ...
    def services(self) -> list[Service]: ...
    def evidence(self) -> list[Flow]: ...
    def dns_answers(self) -> list[DnsAnswerSeen]: ...
    def api_servers(self) -> list[str]: ...


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

    def services(self) -> list[Service]:
        return load_services(self.store)

    def evidence(self) -> list[Flow]:
        return load_evidence(self.store)

    def dns_answers(self) -> list[DnsAnswerSeen]:
        return load_dns_answers(self.store)

    def api_servers(self) -> list[str]:
        with self.store.reading() as conn:
            return read_api_servers(conn)


@contextmanager
def store_or_server(db_url: str | None, server_url: str | None, token: str | None, *,
                    create: bool = False) -> Iterator[Store | StoreClient]:
    """The store at ``db_url`` (default ``$NETPOL_GEN_DB`` or ./netpol-gen.db; created when ``create``), or a
    client of the server at ``server_url`` with bearer ``token``; InputError when both or a server without
    token are given."""
    if server_url and db_url:
        raise InputError("--db and --server exclude each other")
    if server_url:
        if not token:
            raise InputError(f"--server needs --token or ${ENV_TOKEN}")
        from netpol_gen.service.client import Retry, StoreClient

        with StoreClient(server_url, token, retry=Retry(deadline=10.0)) as client:
            yield client
        return
    store = open_store(db_url, create=create)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def learning_source(db_url: str | None, server_url: str | None, token: str | None) -> Iterator[LearningSource]:
    """What was learnt, from the store or the server (see :func:`store_or_server`)."""
    with store_or_server(db_url, server_url, token) as opened:
        yield LocalSource(opened) if isinstance(opened, Store) else opened


def open_learned(db_url: str | None, server_url: str | None, token: str | None) -> LearnedInputs:
    """Everything the synthesizer needs, from the store or the server."""
    with learning_source(db_url, server_url, token) as source:
        return source.learned()
