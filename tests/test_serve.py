"""`netpol-gen serve` over real HTTP (uvicorn on 127.0.0.1, httpx), on SQLite and on PostgreSQL:
authentication, body limits, gzip, idempotent retries, 20 concurrent collectors, a server restarted
mid-run, and the remote CLI (`export`, `flows`, `status` with --server) against a local import."""

from __future__ import annotations

import gzip
import inspect
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from netpol_gen.ingest.pcap import read_capture
from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.model import Flow, load_cluster
from netpol_gen.model.aggregate import Batch, EdgeTotals
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.client import Retry, ServerError, StoreClient, post_batch
from netpol_gen.service.server import Limits, create_app
from netpol_gen.service.wire import BatchMessage, WireError, encode, read_batch
from netpol_gen.store.db import Store, open_store
from netpol_gen.store.query import list_edges
from tests.cli import run_cli
from tests.serving import TOKEN, Serve, ThreadServer, free_port, wait_ready

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
LIMITS = Limits(max_body=256 << 10, max_decoded=1 << 20)
FAST = Retry(deadline=20.0, base=0.02, cap=0.3)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def server(store: Store) -> Iterator[ThreadServer]:
    running = ThreadServer(create_app(store, SharedSecret(TOKEN), limits=LIMITS)).start()
    yield running
    running.stop()


def _pod(name: str) -> Identity:
    return Identity(IdentityKind.POD, "shop", "Deployment", name)


def _batch(pairs: list[tuple[str, str, int]], ts: float = 1_790_000_000.0) -> Batch:
    batch = Batch()
    for src, dst, port in pairs:
        batch.edges[(_pod(src), _pod(dst), port, "TCP")] = EdgeTotals(1, 4, 400, ts, ts)
    return batch


def _connections(store: Store) -> Counter[tuple[str, str, int]]:
    with store.reading() as conn:
        return Counter({(e.src.workload_name or "", e.dst.workload_name or "", e.dst_port): e.connections
                        for e in list_edges(conn)})


def _post_raw(url: str, body: bytes, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/v1/batches", content=body, headers=headers, timeout=10)


def _body(batch_id: str, batch: Batch) -> bytes:
    return json.dumps(encode(BatchMessage(batch_id, batch, flows=1, source="test"))).encode()


# --- authentication and request checks ---------------------------------------------------------------


def test_anonymous_and_wrong_tokens_are_refused_and_probes_answer_anyone(server: ThreadServer) -> None:
    body = _body("b1", _batch([("web", "api", 80)]))
    assert _post_raw(server.url, body, token=None).status_code == 401
    assert _post_raw(server.url, body, token="wrong").status_code == 401
    assert _post_raw(server.url, body, token=TOKEN[:-1]).status_code == 401
    for path in ("/v1/learned", "/v1/edges", "/v1/deliveries"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    assert httpx.get(server.url + "/healthz").text == "ok\n"
    assert httpx.get(server.url + "/readyz").status_code == 200
    with pytest.raises(ServerError, match="refused the token") as caught:
        post_batch(server.url, "wrong", _batch([("web", "api", 80)]), "b1", retry=FAST)
    assert caught.value.permanent


def test_nothing_but_batches_can_be_written(server: ThreadServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/v1/learned", "/v1/edges", "/v1/deliveries", "/v1/flows", "/v1/identities"):
        assert httpx.post(server.url + path, content=b"{}", headers=auth).status_code in (404, 405)
    assert httpx.delete(server.url + "/v1/batches", headers=auth).status_code == 405


def test_bodies_over_the_limit_are_refused_with_413_and_gzip_bombs_stop_at_the_limit(
        server: ThreadServer, store: Store) -> None:
    assert _post_raw(server.url, b"x" * (LIMITS.max_body + 1)).status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(LIMITS.max_body // 65536 + 2):
            yield b" " * 65536
    assert _post_raw(server.url, chunked()).status_code == 413  # type: ignore[arg-type]
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB
    assert len(bomb) < LIMITS.max_body
    assert _post_raw(server.url, bomb, **{"Content-Encoding": "gzip"}).status_code == 413
    assert _post_raw(server.url, b"not gzip", **{"Content-Encoding": "gzip"}).status_code == 400
    assert _post_raw(server.url, b"{}", **{"Content-Encoding": "br"}).status_code == 415
    assert _connections(store) == Counter()


MALFORMED = [
    (b"{", "not JSON"),
    (b'{"batch_id": "b1"}', "missing field 'batch'"),
    (b'{"batch_id": "no spaces", "batch": {}}', "batch_id"),
    (b'{"batch_id": "b1", "batch": {"edges": [[["x"], {}]]}}', "batch.edges[0][0][0]"),
    (b'{"batch_id": "b1", "batch": {}, "version": 9}', "version"),
    (b'{"batch_id": "b1", "batch": {}, "admin": true}', "unknown field"),
    (b'{"batch_id": "b1", "batch": {}, "flows": -1}', "flows: expected int >= 0"),
    (b'{"batch_id": "b1", "batch": {}, "flows": 1000000000000000000000000}', "flows"),
    (b'{"batch_id": "b1", "batch": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "batch"),
]


def _poisoned(change: Callable[[Any], None]) -> bytes:
    """A well-formed batch body with one value changed by ``change`` (given the edge: [key, totals])."""
    message = json.loads(_body("p1", _batch([("web", "api", 80)])))
    change(message["batch"]["edges"][0])
    return json.dumps(message).encode()  # json.dumps writes Infinity/NaN as JavaScript does


def _set(path: tuple[int | str, ...], value: Any) -> Callable[[Any], None]:
    def change(edge: Any) -> None:
        for step in path[:-1]:
            edge = edge[step]
        edge[path[-1]] = value
    return change


# Values that are well-formed JSON but would break the store for good (issue #10): each is a 400 naming
# the field, and nothing is written.
POISONED = [
    (_set((1, "first_seen"), float("inf")), "not JSON"),  # Infinity and NaN are not JSON (RFC 8259)
    (_set((1, "last_seen"), float("nan")), "not JSON"),
    (_set((1, "last_seen"), 1e300), "batch.edges[0][1].last_seen"),
    (_set((1, "first_seen"), -1e18), "batch.edges[0][1].first_seen"),
    (_set((1, "last_seen"), time.time() + 7 * 86400), "more than a day in the future"),
    (_set((1, "connections"), -1000), "batch.edges[0][1].connections"),
    (_set((1, "packets"), 10**24), "batch.edges[0][1].packets"),
    (_set((0, 2), 99999), "batch.edges[0][0][2]"),
    (_set((0, 3), "ICMP"), "batch.edges[0][0][3]"),
    (_set((0, 0, "namespace"), "../../etc"), "batch.edges[0][0][0].namespace"),
]


def test_malformed_batches_are_refused_with_400_saying_where(server: ThreadServer, store: Store) -> None:
    for body, message in MALFORMED:
        response = _post_raw(server.url, body)
        assert response.status_code == 400 and message in response.text, (body, response.text)
    assert _connections(store) == Counter()


@pytest.mark.parametrize(("change", "field"), POISONED, ids=[field for _change, field in POISONED])
def test_out_of_range_values_are_refused_with_400_naming_the_field(server: ThreadServer, store: Store,
                                                                     change: Callable[[Any], None],
                                                                     field: str) -> None:
    response = _post_raw(server.url, _poisoned(change))
    assert response.status_code == 400 and field in response.text, response.text
    assert _connections(store) == Counter()
    assert _post_raw(server.url, _body("ok1", _batch([("web", "api", 80)]))).status_code == 200  # still serving


def _edges_of(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def test_each_identity_is_checked_in_every_batch_and_errors_name_the_first_field_in_document_order() -> None:
    """read_batch checks each distinct identity once and remembers it: a name refused must be refused in
    any batch, after the same identity arrived valid, and the error must name the same field as a
    single decoder reading the document in order (the namespace before a later bad port)."""
    good = json.loads(_body("g1", _batch([("web", "api", 80), ("web", "db", 5432)])))
    assert set(read_batch(_edges_of(good)).batch.edges) == set(_batch([("web", "api", 80), ("web", "db", 5432)]).edges)
    bad_name = json.loads(json.dumps(good))
    bad_name["batch"]["edges"][1][0][0]["namespace"] = "Shop"  # the identity seen valid just before, renamed
    with pytest.raises(WireError, match=r"batch.edges\[1\]\[0\]\[0\].namespace: expected str matching regex"):
        read_batch(_edges_of(bad_name))
    bad_name["batch"]["edges"][1][0][2] = 0  # and a bad port after it: the name is still what is named
    with pytest.raises(WireError, match=r"batch.edges\[1\]\[0\]\[0\].namespace: expected str matching regex"):
        read_batch(_edges_of(bad_name))
    bad_name["batch"]["edges"][0][0][2] = 0  # a bad port before it
    with pytest.raises(WireError, match=r"batch.edges\[0\]\[0\]\[2\]: expected int >= 1"):
        read_batch(_edges_of(bad_name))
    keyed = json.loads(json.dumps(good))
    keyed["batch"]["edges"][0][0][0]["key"] = "pod:other/Deployment/x"  # a key sent is recomputed, never trusted
    assert {src.key for src, _dst, _port, _protocol in read_batch(_edges_of(keyed)).batch.edges} == {
        "pod:shop/Deployment/web"}


# --- idempotence and concurrency ---------------------------------------------------------------------


def test_gzip_and_plain_bodies_and_a_retried_batch_id_count_once(server: ThreadServer, store: Store) -> None:
    batch = _batch([("web", "api", 80), ("api", "db", 5432)])
    assert _post_raw(server.url, gzip.compress(_body("b1", batch)), **{"Content-Encoding": "gzip"}).json() == {
        "batch_id": "b1", "written": True}
    assert _post_raw(server.url, _body("b1", batch)).json()["written"] is False  # the same id, plain
    assert post_batch(server.url, TOKEN, batch, "b1", retry=FAST) is False
    assert post_batch(server.url, TOKEN, batch, "b2", retry=FAST) is True
    assert _connections(store) == {("web", "api", 80): 2, ("api", "db", 5432): 2}


def test_twenty_concurrent_collectors_lose_nothing_and_double_count_nothing(server: ThreadServer,
                                                                            store: Store) -> None:
    pool = [(f"w{i}", f"w{(i * 7 + 3) % 12}", 8000 + i % 3) for i in range(12)]  # shared rows: contention
    expected: Counter[tuple[str, str, int]] = Counter()
    plans = []
    for collector in range(20):
        batches = [(f"c{collector}-b{n}", [pool[(collector + n + k) % len(pool)] for k in range(4)])
                   for n in range(8)]
        plans.append(batches)
        for _, pairs in batches:
            expected.update(pairs)
    results: list[tuple[bool, bool]] = []
    errors: list[BaseException] = []

    def collect(batches: list[tuple[str, list[tuple[str, str, int]]]]) -> None:
        try:
            with StoreClient(server.url, TOKEN, retry=FAST) as client:
                for batch_id, pairs in batches:
                    message = BatchMessage(batch_id, _batch(pairs), flows=len(pairs))
                    results.append((client.post(message), client.post(message)))  # every batch retried once
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=collect, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert results.count((True, False)) == len(results) == 160
    assert _connections(store) == expected


def test_a_server_restarted_mid_run_gets_every_batch_exactly_once(store: Store) -> None:
    server = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    client = StoreClient(server.url, TOKEN, retry=FAST, timeout=2.0)
    delivered: list[bool] = []
    errors: list[BaseException] = []

    def collect() -> None:
        try:
            for n in range(30):
                batch = _batch([("web", "api", 80), ("api", "db", 5000 + n)])
                delivered.append(client.post(BatchMessage(f"b{n}", batch)))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=collect)
    thread.start()
    _until(lambda: len(delivered) >= 5)
    server.stop()
    _until(lambda: client.stats.retries >= 2)  # the collector is now retrying against a closed port
    server = ThreadServer(create_app(store, SharedSecret(TOKEN)), port=server.port).start()
    thread.join(30)
    client.close()
    server.stop()
    assert not errors and len(delivered) == 30
    counts = _connections(store)
    assert counts[("web", "api", 80)] == 30 and all(counts[("api", "db", 5000 + n)] == 1 for n in range(30))


def _until(condition: object, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def test_an_unreachable_server_is_retried_until_the_deadline_then_reported(tmp_path: Path) -> None:
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = StoreClient(f"http://127.0.0.1:{free_port()}", TOKEN, retry=Retry(deadline=10.0, base=0.5, cap=4.0),
                         sleep=sleep, clock=lambda: now[0])
    with pytest.raises(ServerError, match="cannot reach the server") as caught:
        client.post(BatchMessage("b1", _batch([("web", "api", 80)])))
    client.close()
    assert not caught.value.permanent
    assert sum(slept) <= 10.0 and len(slept) >= 3 and max(slept) <= 4.0
    assert slept[1] > slept[0] * 0.9  # backing off, with jitter of at most half


# --- the remote CLI equals the local one -------------------------------------------------------------


def _ship_capture_in_batches(url: str, parts: int) -> None:
    """What collectors do: one Ingest, a batch per interval, the cluster view with the first batch."""
    cluster = load_cluster([str(EXAMPLE / "cluster.yaml")], require_pods=True)
    records = list(read_capture(str(EXAMPLE / "capture.pcap")).records)
    ingest = Ingest(cluster)
    size = len(records) // parts + 1
    for n in range(parts):
        for record in records[n * size:(n + 1) * size]:
            if isinstance(record, Flow):
                ingest.add_flow(record)
            else:
                ingest.add_dns(record)
        flows = sum(isinstance(r, Flow) for r in records[n * size:(n + 1) * size])
        assert post_batch(url, TOKEN, ingest.take_batch(), f"pcap-{n}", flows=flows, source="node-1",
                          cluster=cluster if n == 0 else None, retry=FAST)


def test_export_flows_and_status_via_server_equal_a_local_import(server: ThreadServer, tmp_path: Path) -> None:
    local = f"sqlite:///{tmp_path / 'local.db'}"
    code, _, err = run_cli("import", "--db", local, "--cluster", str(EXAMPLE / "cluster.yaml"),
                        "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err
    _ship_capture_in_batches(server.url, parts=4)
    env = {"NETPOL_GEN_TOKEN": TOKEN}
    for command in (["export"], ["export", "--format", "json", "--default-deny"], ["flows", "--format", "json"],
                    ["flows", "--format", "csv", "--namespace", "booking"]):
        code, remote, err = run_cli(*command, "--server", server.url, env=env)
        assert code == 0, err
        local_run = run_cli(*command, "--db", local)
        assert (code, remote) == (local_run.exit_code, local_run.stdout), command
    assert "kind: NetworkPolicy" in remote or command[0] == "flows"
    code, out, err = run_cli("status", "--server", server.url, "--format", "json", env=env)
    assert code == 0, err
    status = json.loads(out)
    local_status = json.loads(run_cli("status", "--db", local, "--format", "json").stdout)
    assert status["deliveries"] == 4 and status["edges"] == local_status["edges"]


def test_remote_cli_errors_are_one_line(server: ThreadServer) -> None:
    code, _, err = run_cli("export", "--server", server.url, "--token", "wrong")
    assert code == 2 and err.count("\n") == 1 and "refused the token" in err
    code, _, err = run_cli("flows", "--server", server.url)
    assert code == 2 and "--token" in err
    code, _, err = run_cli("export", "--server", server.url, "--db", "sqlite:///x.db", "--token", TOKEN)
    assert code == 2 and "exclude each other" in err


# --- the command itself ------------------------------------------------------------------------------


def test_serve_command_serves_until_terminated(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    process = subprocess.Popen([str(Path(sys.executable).parent / "netpol-gen"), "serve", "--db", db, "--listen",
                                f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token")],
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        assert post_batch(f"http://127.0.0.1:{port}", TOKEN, _batch([("web", "api", 80)]), "b1", retry=FAST)
        code, out, err = run_cli("flows", "--server", f"http://127.0.0.1:{port}", "--token", TOKEN, "--format", "csv")
        assert code == 0 and "shop/Deployment/web,shop/Deployment/api,80,TCP,1" in out, err
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr  # SIGTERM is the normal stop: drained, then exit 0
    assert "Finished server process" in stderr
    assert f"serving {db} on http://127.0.0.1:{port}" in stderr


def _local_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def test_an_idle_kept_alive_connection_outlives_both_libraries_default_keep_alive(tmp_path: Path) -> None:
    """A collector's next post on its pooled connection after an idle gap (the serve command itself, real
    HTTP). With uvicorn's and httpx's defaults (5 s each) the server closes such a connection as the client
    may be sending on it (RemoteProtocolError); serve keeps it open longer than the client keeps it, so
    after a gap longer than both defaults the same connection carries the next request."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    serve = Serve(f"sqlite:///{tmp_path / 'store.db'}", f"127.0.0.1:{free_port()}", tmp_path / "token",
                  tmp_path / "serve.log").start()
    defaults = (inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default,
                httpx.Limits().keepalive_expiry or 0.0)
    try:
        with StoreClient(serve.url, TOKEN, retry=FAST) as client:
            first = _local_port(client.request("GET", "/v1/deliveries"))
            time.sleep(max(defaults) + 1)  # the idle gap under test, not a synchronisation
            second = _local_port(client.request("GET", "/v1/deliveries"))
            assert client.stats.retries == 0
    finally:
        serve.stop()
    assert second == first


def test_serve_needs_exactly_one_way_to_check_tokens(tmp_path: Path) -> None:
    code, _, err = run_cli("serve", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert code == 2 and "--token-file FILE or --tokenreview" in err
    code, _, err = run_cli("serve", "--tokenreview")
    assert code == 2 and "--writer" in err
    (tmp_path / "empty").write_text("\n")
    code, _, err = run_cli("serve", "--token-file", str(tmp_path / "empty"))
    assert code == 2 and "token file is empty" in err
