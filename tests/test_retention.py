"""Retention (``serve --retain``, ``netpol-gen prune``) on SQLite and PostgreSQL, with an injected clock.

Stands in for a store that learnt for weeks: two collectors deliver a batch every two hours for 40
simulated days (the same few edges over and over, as a settled cluster sends), with one shadow set
denying one edge every hour, and retention runs once a simulated day. Rows grow with the window, not
with the days; what users read (edges, the synthesizer's input, status totals, shadow totals) stays
the same; a collector redelivering a batch whose id was pruned is refused, not counted twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch, EdgeTotals, Sample
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.service.wire import BatchMessage, encode
from netpol_gen.store import schema as t
from netpol_gen.store.batches import Delivery, deliver_batches
from netpol_gen.store.db import Store, open_store
from netpol_gen.store.learned import load_learned
from netpol_gen.store.progress import read_deliveries
from netpol_gen.store.query import list_edges
from netpol_gen.store.retention import DAY, StaleBatch, parse_duration, prune
from netpol_gen.store.shadow import Denial, add_set, denied_edges, denied_totals, record_denials
from tests.cli import run_cli
from tests.serving import TOKEN, free_port, wait_ready

WEB = Identity(IdentityKind.POD, "shop", "Deployment", "web")
API = Identity(IdentityKind.POD, "shop", "Deployment", "api")
DB = Identity(IdentityKind.POD, "shop", "StatefulSet", "db")
START = 1_700_006_400.0  # a UTC midnight
EVERY = 7200.0
DAYS = 40
RETAIN = 30 * DAY
NODES = ("node-a", "node-b")


def _batch(at: float, node: str) -> Batch:
    sample = Sample(at, "10.0.0.1", 40000, "10.0.0.2", 8080, None, None, None, 1, 100)
    return Batch({(WEB, API, 8080, "TCP"): EdgeTotals(connections=2, first_seen=at - 5, last_seen=at, samples=[sample]),
                  (API, DB, 5432, "TCP"): EdgeTotals(connections=1, first_seen=at - 3, last_seen=at - 1)}
                 if node == "node-a" else
                 {(WEB, API, 8080, "TCP"): EdgeTotals(connections=1, first_seen=at - 2, last_seen=at)})


def _denier(set_id: int, at: float) -> object:
    def record(conn: Connection) -> None:
        record_denials(conn, [Denial(set_id, API, DB, 5432, "TCP", "egress", ("shop/deny-db",), "10.0.0.2",
                                     "10.0.0.3", 1, at - 1, at)], now=at)
    return record


def _deliver(store: Store, set_id: int, at: float, node: str) -> list[bool]:
    batch_id = f"{node}-{int(at)}"
    then = _denier(set_id, at) if node == "node-a" else None
    return deliver_batches(store, [Delivery(batch_id, _batch(at, node), 3, f"collect:{node}", then=then)],  # type: ignore[arg-type]
                           now=at + 1)


def _rows(store: Store, table: sa.Table) -> int:
    with store.reading() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _read(store: Store, since: float) -> tuple[object, ...]:
    with store.reading() as conn:
        return (list_edges(conn), read_deliveries(conn), denied_totals(conn), denied_edges(conn),
                denied_edges(conn, since=since))


def test_a_month_of_deliveries_stays_within_the_window_and_reads_the_same(store_url: str) -> None:
    store = open_store(store_url)
    try:
        set_id = _shadow_set(store)
        peak = 0
        for day in range(DAYS):
            for step in range(int(DAY // EVERY)):
                at = START + day * DAY + step * EVERY
                for node in NODES:
                    assert _deliver(store, set_id, at, node) == [True]
            now = START + (day + 1) * DAY
            before = _read(store, since=now - 2 * DAY)
            report = prune(store, RETAIN, now)
            assert _read(store, since=now - 2 * DAY) == before  # nothing read within the window changes
            peak = max(peak, _rows(store, t.imports))
            if day >= 30:
                assert report.batches == len(NODES) * DAY // EVERY  # one day of batches left the window
        # ids: the window's worth (plus the day a pass runs behind), whatever the number of days
        assert peak <= len(NODES) * (RETAIN + DAY) / EVERY
        assert _rows(store, t.delivery_totals) == len(NODES)
        with store.reading() as conn:
            deliveries = read_deliveries(conn)
            hours = [row.hour for row in conn.execute(sa.select(t.shadow_denials.c.hour))]
        assert deliveries.batches == DAYS * len(NODES) * DAY // EVERY
        assert deliveries.flows == 3 * deliveries.batches
        assert deliveries.last == START + DAYS * DAY - EVERY + 1
        cutoff = START + DAYS * DAY - RETAIN
        old = [h for h in hours if h < cutoff // DAY * DAY]
        assert old and all(h % DAY == 0 for h in old)  # a row per day past the window
        assert len(old) == len({h for h in old})
        assert len([h for h in hours if h >= cutoff]) == 30 * 12  # an hour row per batch within it
    finally:
        store.close()


def _shadow_set(store: Store) -> int:
    add_set(store, "strict", "test", [])
    with store.reading() as conn:
        return int(conn.execute(sa.select(t.shadow_sets.c.id)).scalar_one())


def test_pruning_leaves_edges_export_input_status_and_shadow_totals_as_they_were(store_url: str) -> None:
    store = open_store(store_url)
    try:
        set_id = _shadow_set(store)
        for day in range(DAYS):
            for step in range(0, int(DAY // EVERY), 3):
                for node in NODES:
                    _deliver(store, set_id, START + day * DAY + step * EVERY, node)
        now = START + DAYS * DAY
        before, learnt = _read(store, since=now - DAY), load_learned(store)
        with store.reading() as conn:
            by_day_before = {(d.set, d.connections) for d in denied_edges(conn, since=START + 5 * DAY)}
        report = prune(store, RETAIN, now)
        assert report.batches and report.denials
        assert _read(store, since=now - DAY) == before
        assert load_learned(store) == learnt  # what export synthesizes from
        with store.reading() as conn:
            # past the window `since` counts to the day: a since at a day's start counts the same
            assert {(d.set, d.connections) for d in denied_edges(conn, since=START + 5 * DAY)} == by_day_before
        assert prune(store, RETAIN, now) == type(report)(0, 0)  # a second pass has nothing left to do
    finally:
        store.close()


def test_a_batch_redelivered_after_its_id_was_pruned_is_refused_not_counted_twice(store_url: str) -> None:
    store = open_store(store_url)
    try:
        set_id = _shadow_set(store)
        first = START
        _deliver(store, set_id, first, "node-a")
        now = START + RETAIN + 2 * DAY
        _deliver(store, set_id, now - 10, "node-b")  # a fresh one, in the window
        assert prune(store, RETAIN, now).batches == 1
        edges = _read(store, since=now)[0]
        with pytest.raises(StaleBatch, match="batch node-a-1700006400: older than the batch ids"):
            _deliver(store, set_id, first, "node-a")
        assert _read(store, since=now)[0] == edges
        # a fresh batch of the same node still counts, and so does a file digest of any age (kept forever)
        assert _deliver(store, set_id, now - 5, "node-a") == [True]
        digest = "f" * 64
        old_file = Delivery(digest, _batch(first, "node-b"), 1, "import")
        assert deliver_batches(store, [old_file], now=now) == [True]
        prune(store, RETAIN, now + RETAIN + DAY)
        assert deliver_batches(store, [old_file], now=now + RETAIN + DAY) == [False]
    finally:
        store.close()


@pytest.mark.parametrize("text, seconds", [("30d", 30 * DAY), ("36h", 1.5 * DAY), ("1440m", DAY)])
def test_retain_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "2w", "12h", "-1d"])
def test_retain_refuses_non_durations_and_windows_under_a_day_in_one_line(text: str) -> None:
    with pytest.raises(Exception, match=f"--retain {text}: "):
        parse_duration(text)


# --- the commands: serve --retain over real HTTP, and prune ---------------------------------------------


def _old_store(path: Path) -> tuple[str, Batch]:
    """A store holding one batch delivered 40 days ago (and its id), as a collector left it."""
    url = f"sqlite:///{path}"
    store = open_store(url)
    old = time.time() - 40 * DAY
    batch = _batch(old, "node-b")
    deliver_batches(store, [Delivery("b-old", batch, 1, "collect:node-b")], now=old + 1)
    store.close()
    return url, batch


def test_serve_retain_prunes_and_answers_a_pruned_batch_with_422_saying_why(tmp_path: Path) -> None:
    """Stands in for a collector whose spool redelivers a batch a month after the store took it."""
    url, batch = _old_store(tmp_path / "store.db")
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "netpol-gen"), "serve", "--db", url, "--listen",
                                f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"), "--retain", "30d"],
                               stderr=subprocess.PIPE, text=True)
    try:
        server = f"http://127.0.0.1:{port}"
        wait_ready(server)
        store = open_store(url)
        end = time.monotonic() + 20
        while _rows(store, t.imports):  # the first pass runs at start
            assert time.monotonic() < end, "serve --retain never pruned the old batch id"
            time.sleep(0.05)  # polling interval, not synchronisation
        body = json.dumps(encode(BatchMessage("b-old", batch, flows=1, source="collect:node-b"))).encode()
        answer = httpx.post(f"{server}/v1/batches", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 422
        assert "batch b-old: older than the batch ids this store keeps" in answer.text
        with store.reading() as conn:
            assert [e.connections for e in list_edges(conn)] == [1]  # counted once
            assert read_deliveries(conn).batches == 1
        store.close()
    finally:
        process.terminate()
        process.communicate(timeout=15)
    assert process.returncode == 0


def test_prune_command_reports_what_it_rolled_up_and_refuses_a_bad_window_in_one_line(tmp_path: Path) -> None:
    url, _ = _old_store(tmp_path / "store.db")
    code, out, err = run_cli("prune", "--db", url, "--retain", "30d")
    assert code == 0, err
    assert out == "pruned: 1 batch ids summed into delivery totals, 0 shadow denial rows merged into days\n"
    code, out, err = run_cli("prune", "--db", url, "--retain", "3h")
    assert code == 2 and err == "netpol-gen: error: --retain 3h: retain at least 1d (shadow denials keep minutes " \
                                "for a day)\n"
