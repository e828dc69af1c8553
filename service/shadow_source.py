"""Where ``shadow`` and ``watch`` manage and read shadow sets: a local store (``--db``) or a server
(``--server``), answering with the same objects (:mod:`netpol_gen.store.shadow`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from netpol_gen.errors import PolicyError
from netpol_gen.model.documents import Document, load_documents
from netpol_gen.service.client import StoreClient
from netpol_gen.service.shadow import check_name, validate
from netpol_gen.service.source import store_or_server
from netpol_gen.service.synced_sets import IN_FORCE
from netpol_gen.service.wire import read
from netpol_gen.store.db import Store
from netpol_gen.store.shadow import DeniedEdge, ShadowSet, ShadowSetError, add_set, denied_edges, list_sets, remove_set


class ShadowSource(Protocol):
    def add(self, name: str, source: str, documents: Sequence[Document]) -> ShadowSet: ...
    def remove(self, name: str) -> None: ...
    def sets(self) -> list[ShadowSet]: ...
    def denied(self, set_name: str | None, since: float | None) -> list[DeniedEdge]: ...


class SetDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    where: str
    obj: dict[str, Any]


class SetMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The declared schema of ``POST /v1/shadow/sets``."""

    name: str
    source: str
    documents: list[SetDocument]


def read_documents(paths: Sequence[str]) -> list[Document]:
    """The policy documents of FILE|DIR arguments, each parsed by the evaluator (PolicyError on the first bad one)."""
    documents = list(load_documents(paths, PolicyError))
    validate(documents)
    return documents


def add_checked(store: Store, name: str, source: str, documents: Sequence[Document]) -> ShadowSet:
    """Validate the name and every policy, then record the set: a bad one stores nothing."""
    check_name(name)
    if name == IN_FORCE:
        raise ShadowSetError("this name is the policies in force's (serve --in-force keeps it)",
                             where=f"shadow set {name}")
    validate(documents)
    return add_set(store, name, source, [{"where": d.where, "obj": d.obj} for d in documents])


@dataclass
class LocalShadow:
    store: Store

    def add(self, name: str, source: str, documents: Sequence[Document]) -> ShadowSet:
        return add_checked(self.store, name, source, documents)

    def remove(self, name: str) -> None:
        remove_set(self.store, name)

    def sets(self) -> list[ShadowSet]:
        with self.store.reading() as conn:
            return list_sets(conn)

    def denied(self, set_name: str | None, since: float | None) -> list[DeniedEdge]:
        with self.store.reading() as conn:
            return denied_edges(conn, set_name, since)


@dataclass
class RemoteShadow:
    client: StoreClient

    def add(self, name: str, source: str, documents: Sequence[Document]) -> ShadowSet:
        check_name(name)
        message = {"name": name, "source": source, "documents": [{"where": d.where, "obj": d.obj} for d in documents]}
        return read(ShadowSet, self.client.request("POST", "/v1/shadow/sets", json=message).json())

    def remove(self, name: str) -> None:
        check_name(name)
        self.client.request("DELETE", f"/v1/shadow/sets/{name}")

    def sets(self) -> list[ShadowSet]:
        return read(list[ShadowSet], self.client.request("GET", "/v1/shadow/sets").json())

    def denied(self, set_name: str | None, since: float | None) -> list[DeniedEdge]:
        params = {key: str(value) for key, value in (("set", set_name), ("since", since)) if value is not None}
        return read(list[DeniedEdge], self.client.request("GET", "/v1/shadow/denied", params=params).json())


@contextmanager
def shadow_source(db_url: str | None, server_url: str | None, token: str | None, *,
                  writing: bool = False) -> Iterator[ShadowSource]:
    """The store at ``db_url`` (opened to write when ``writing``) or the server at ``server_url``."""
    with store_or_server(db_url, server_url, token, create=writing) as opened:
        yield LocalShadow(opened) if isinstance(opened, Store) else RemoteShadow(opened)
