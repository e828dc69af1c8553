"""Tokens checked with TokenReview: only the listed users, writers apart from readers, answers cached
briefly (and refusals more briefly), no token kept in memory; through the app, 401 versus 403."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from netpol_gen.service.auth import Access, Review, TokenReview
from netpol_gen.service.server import create_app
from netpol_gen.store.db import open_store
from tests.serving import ThreadServer

COLLECTOR = "system:serviceaccount:netpol-gen:netpol-gen-collector"
CLI = "system:serviceaccount:netpol-gen:netpol-gen-cli"
USERS = {"collector-token": COLLECTOR, "cli-token": CLI, "other-token": "system:serviceaccount:shop:web"}


class FakeApiServer:
    def __init__(self) -> None:
        self.reviews: list[str] = []
        self.now = 0.0

    def review(self, token: str) -> Review:
        self.reviews.append(token)
        return Review(USERS.get(token))


@pytest.fixture
def api() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def auth(api: FakeApiServer) -> TokenReview:
    return TokenReview(api.review, frozenset({COLLECTOR}), frozenset({CLI}), ttl=60, negative_ttl=5,
                       clock=lambda: api.now)


def test_only_listed_service_accounts_get_in_each_with_its_own_access(auth: TokenReview) -> None:
    collector, cli = auth.authenticate("collector-token"), auth.authenticate("cli-token")
    assert collector is not None and collector.may == {Access.WRITE}
    assert cli is not None and cli.may == {Access.READ}
    assert auth.authenticate("other-token") is None  # a valid token of another ServiceAccount
    assert auth.authenticate("garbage") is None


def test_answers_are_cached_for_the_ttl_and_refusals_for_less(auth: TokenReview, api: FakeApiServer) -> None:
    for _ in range(3):
        auth.authenticate("collector-token")
        auth.authenticate("garbage")
    assert api.reviews == ["collector-token", "garbage"]
    api.now = 10.0  # the refusal expired, the acceptance did not
    auth.authenticate("collector-token")
    auth.authenticate("garbage")
    assert api.reviews == ["collector-token", "garbage", "garbage"]
    api.now = 61.0
    auth.authenticate("collector-token")
    assert api.reviews[-1] == "collector-token" and len(api.reviews) == 4
    assert all(isinstance(key, bytes) and len(key) == 32 for key in auth._cache)  # hashes, not tokens


@pytest.fixture
def client(auth: TokenReview, tmp_path: object) -> Iterator[httpx.Client]:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    server = ThreadServer(create_app(store, auth)).start()
    with httpx.Client(base_url=server.url) as http:
        yield http
    server.stop()
    store.close()


def test_readers_cannot_write_and_writers_cannot_read(client: httpx.Client) -> None:
    batch = {"batch_id": "b1", "batch": {}}
    as_cli = {"Authorization": "Bearer cli-token"}
    as_collector = {"Authorization": "Bearer collector-token"}
    assert client.post("/v1/batches", json=batch, headers=as_cli).status_code == 403
    assert client.post("/v1/batches", json=batch, headers=as_collector).json() == {"batch_id": "b1", "written": True}
    assert client.get("/v1/edges", headers=as_collector).status_code == 403
    assert client.get("/v1/edges", headers=as_cli).json() == []
    assert client.get("/v1/edges", headers={"Authorization": "Bearer other-token"}).status_code == 401
