"""``import --server URL --token-file F``: offline captures posted to a real ``serve`` (uvicorn on loopback,
SQLite and PostgreSQL behind it) as collector batches.

Stands in for an air-gapped capture carried to the central store: it must land exactly as a local
``import --db`` of the same files would, count once however often it is run (or run through another
path into the same store), and a bad file must post nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.server import create_app
from netpol_gen.service.source import LocalSource
from netpol_gen.store.db import open_store
from tests.cli import run_cli
from tests.serving import TOKEN, ThreadServer
from tests.test_shadow import CLUSTER, _flows, _write


@pytest.fixture
def server(store_url: str) -> Iterator[ThreadServer]:
    store = open_store(store_url)
    running = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    yield running
    running.stop()
    store.close()


def _edges(url: str) -> dict[tuple[str, str, int, str], int]:
    store = open_store(url, create=False)
    try:
        return {(r.src.key, r.dst.key, r.dst_port, r.protocol): r.connections for r in LocalSource(store).edges()}
    finally:
        store.close()


def _files(tmp_path: Path) -> list[str]:
    flows = _flows()
    half = len(flows) // 2
    return ["--flows", _write(tmp_path / "node-a.jsonl", flows[:half]),
            "--flows", _write(tmp_path / "node-b.jsonl", flows[half:])]


def test_import_through_serve_lands_as_a_local_import_and_twice_counts_once(
        store_url: str, server: ThreadServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    files = _files(tmp_path)
    args = ("import", "--server", server.url, "--token-file", str(token), "--cluster", CLUSTER, *files)
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "sources posted: 2" in first.stdout
    local = f"sqlite:///{tmp_path / 'local.db'}"
    assert run_cli("import", "--db", local, "--cluster", CLUSTER, *files).exit_code == 0
    assert _edges(store_url) == _edges(local) and sum(_edges(local).values()) > 0

    again = run_cli(*args)
    assert again.exit_code == 0 and "sources posted: 0 (2 already in the store" in again.stdout
    assert _edges(store_url) == _edges(local)
    # the same files imported directly into that store are recognised too: the batch id is the file's digest
    direct = run_cli("import", "--db", store_url, "--cluster", CLUSTER, *files)
    assert direct.exit_code == 0 and "sources imported: 0" in direct.stdout
    assert _edges(store_url) == _edges(local)


def test_a_bad_flow_file_posts_nothing(store_url: str, server: ThreadServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src_ip": "10.244.1.15", "dst_ip": "10.96.10.20", "dst_port": 99999, "protocol": "TCP"}\n')
    code, out, err = run_cli("import", "--server", server.url, "--token-file", str(token), "--cluster", CLUSTER,
                             *_files(tmp_path), "--flows", str(bad))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and f"{bad}:line 1" in err, err
    assert "Traceback" not in err
    assert _edges(store_url) == {}


def test_a_refused_token_is_one_line_and_exit_2(server: ThreadServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-token")
    code, _out, err = run_cli("import", "--server", server.url, "--token-file", str(token), "--cluster", CLUSTER,
                              *_files(tmp_path), "--retry-for", "0")
    assert code == 2 and len(err.splitlines()) == 1 and "refused the token" in err and "0 of 2 files" in err
