"""Attempts never answered (denied in force) through ``import`` into the store, on SQLite and PostgreSQL:
``flows`` counts them per edge, ``watch --set in-force`` lists them beside what the policies in force deny,
``status`` reports them, and a store made before the table existed is read and then extended.

The flow file is the bundled example's traffic with two attempts marked ``"answered": false`` as the
collector and ``import --pcap`` write them: the nightly job's connection to postgres, which the policies in
force (one NetworkPolicy admitting only the backends) deny, and one to a web frontend they allow (a peer
that was down). Stands in for an operator who enforced policies and asks what the CNI dropped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from netpol_gen.model.documents import Document
from netpol_gen.model.flows import Flow
from netpol_gen.service.synced_sets import sync_in_force
from netpol_gen.store import schema as t
from netpol_gen.store.db import open_store
from netpol_gen.store.unanswered import read_unanswered, roll_up
from tests.cli import run_cli
from tests.test_in_force import POSTGRES
from tests.test_shadow import CLUSTER, OMITTED, _edge, _flows, _is_omitted, _watch, _write

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **POSTGRES}


def _marked() -> tuple[list[Flow], Flow]:
    """The example's flows with the omitted edge's attempt and one allowed attempt never answered."""
    flows = _flows()
    allowed = next(f for f in flows if f.dst_port != 5432 and f.protocol == "TCP")
    return [replace(f, answered=False) if _is_omitted(f) or f is allowed else f for f in flows], allowed


def test_attempts_never_answered_are_counted_per_edge_and_listed_under_the_policies_in_force(
        store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url, create=True)
    try:
        assert sync_in_force(store, "test", [Document("test:postgres", POLICY)])
    finally:
        store.close()
    flows, allowed = _marked()
    path = _write(tmp_path / "flows.jsonl", flows)
    assert sum('"answered":false' in line for line in Path(path).read_text().splitlines()) == 2
    outcome = run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows", path)
    assert outcome.exit_code == 0, outcome.output

    edges = json.loads(run_cli("flows", "--db", store_url, "--format", "json").stdout)
    counted = {(e["destination"]["workload_name"], e["port"]): e["unanswered"] for e in edges if e["unanswered"]}
    assert counted == {("postgres", 5432): 1, (next(e["destination"]["workload_name"] for e in edges
                                                   if e["port"] == allowed.dst_port and e["unanswered"]),
                                              allowed.dst_port): 1}
    assert sum(e["connections"] for e in edges) == len(flows)  # an unanswered attempt is still a connection

    records = _watch("--db", store_url, "--set", "in-force")
    denied = [r for r in records if r["side"] != "unknown"]
    assert [_edge(r) | {"set": "proposed"} for r in denied] == [OMITTED]  # the edge the policy leaves out
    assert (denied[0]["side"], denied[0]["connections"], denied[0]["unanswered"]) == ("ingress", 1, 1)
    others = [r for r in records if r["side"] == "unknown"]  # allowed by what is in force: a dead peer?
    assert [(r["port"], r["connections"], r["unanswered"], r["policies"]) for r in others] == [
        (allowed.dst_port, 1, 1, [])]
    text = run_cli("watch", "--db", store_url, "--set", "in-force").stdout
    assert "(1 never answered)" in text and "never answered: 1 attempts" in text
    assert _watch("--db", store_url, "--set", "other") == []
    status = run_cli("status", "--db", store_url).stdout
    assert "denied in force: 2 connection attempts never answered on 2 edges" in status


def test_day_old_minutes_roll_up_into_hours_and_an_older_store_gains_the_table(store_url: str, tmp_path: Path) -> None:
    """A store made before the table existed (dropped here) is read as having no attempts, and opened to
    write it gets the table; minutes a day old merge into their hour, losing no attempt."""
    flows, _ = _marked()
    first = next(f for f in flows if f.answered)
    assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows",
                   _write(tmp_path / "a.jsonl", [first])).exit_code == 0
    store = open_store(store_url, create=True)
    with store.transaction() as conn:
        t.edge_unanswered.drop(conn)
    store.close()
    edges = json.loads(run_cli("flows", "--db", store_url, "--format", "json").stdout)
    assert edges and all(e["unanswered"] == 0 for e in edges)

    outcome = run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows",
                      _write(tmp_path / "b.jsonl", [f for f in flows if f is not first]))
    assert outcome.exit_code == 0, outcome.output
    store = open_store(store_url, create=True)
    try:
        with store.transaction() as conn:
            before = {edge: seen.attempts for edge, seen in read_unanswered(conn).items()}
            latest = max(conn.execute(sa.select(t.edge_unanswered.c.last_seen)).scalars())
            assert sum(before.values()) == 2
            roll_up(conn, latest + 3 * 86400)
            minutes = conn.execute(sa.select(t.edge_unanswered.c.minute)).scalars().all()
            assert all(minute % 3600 == 0 for minute in minutes)
            assert {edge: seen.attempts for edge, seen in read_unanswered(conn).items()} == before
    finally:
        store.close()
