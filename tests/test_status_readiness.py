"""`netpol-gen status` answers "may I stop learning?" on SQLite and PostgreSQL: the trend of new edges,
workload coverage with the workloads never seen, what each shadow set would deny, and a recommendation
that turns from export to keep learning when a new edge appears. Stands in for a user polling status
before exporting, with traffic replayed at chosen times through the real `import`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.listings import Deliveries, EdgeRow
from netpol_gen.store.progress import summarize
from netpol_gen.store.readiness import EXPORT, KEEP_LEARNING, TREND_HOURS, assess
from tests.cli import run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
NOW = 1_800_000_000.0


def _edge(first_seen: float, port: int) -> EdgeRow:
    web = Identity(IdentityKind.POD, "shop", "Deployment", "web")
    return EdgeRow(web, web, port, "TCP", 1, None, None, first_seen, first_seen, ())


def test_a_rising_rate_keeps_learning_even_without_a_new_edge_in_the_last_hour() -> None:
    edges = [_edge(NOW - 2 * 3600 - port, port) for port in range(1, 4)] + [_edge(NOW - 8 * 3600, 9)]
    status = summarize(edges, Deliveries(5, 50, NOW - 10), NOW, 24)
    assert status.state == "settled"
    readiness = assess(status, edges, ["shop/Deployment/web", "shop/CronJob/report"], [], NOW)
    assert (readiness.trend, readiness.new_recent, readiness.new_before) == ("rising", 3, 1)
    assert readiness.recommendation == KEEP_LEARNING
    assert (readiness.workloads_seen, readiness.workloads_known, readiness.never_seen) == (
        1, 2, ["shop/CronJob/report"])
    falling = assess(status, edges[:1] + [_edge(NOW - 8 * 3600 - port, port) for port in (10, 11)], [], [], NOW)
    assert (falling.trend, falling.recommendation) == ("falling", EXPORT)


def _flows_at(path: Path, start: float, span: float) -> str:
    lines = [json.loads(line) for line in (EXAMPLE / "flows.jsonl").read_text().splitlines() if line.strip()]
    first, last = min(line["ts"] for line in lines), max(line["ts"] for line in lines)
    path.write_text("".join(json.dumps({**line, "ts": start + (line["ts"] - first) * span / (last - first)}) + "\n"
                            for line in lines))
    return str(path)


def test_the_recommendation_turns_when_a_new_edge_appears(store_url: str, tmp_path: Path) -> None:
    cluster = str(EXAMPLE / "cluster.yaml")
    now = time.time()
    old = _flows_at(tmp_path / "old.jsonl", now - (2 * TREND_HOURS - 1) * 3600, 3 * 3600)  # all > 6 h ago
    assert run_cli("import", "--db", store_url, "--cluster", cluster, "--flows", old).exit_code == 0
    assert run_cli("shadow", "add", "inforce", str(EXAMPLE / "policies"), "--db", store_url).exit_code == 0

    text = run_cli("status", "--db", store_url).stdout
    assert "recommendation: export" in text, text
    report = json.loads(run_cli("status", "--db", store_url, "--format", "json").stdout)["readiness"]
    assert report["trend"] == "falling" and report["recommendation"] == EXPORT
    assert 0 < report["workloads_seen"] <= report["workloads_known"]
    assert report["denied_by_set"] == {}  # nothing ingested since the set was added

    new = tmp_path / "new.jsonl"  # a known connection on a port never seen before: a new edge
    first = json.loads((EXAMPLE / "flows.jsonl").read_text().splitlines()[0])
    new.write_text(json.dumps({**first, "dst_port": first["dst_port"] + 1, "ts": now - 60}) + "\n")
    assert run_cli("import", "--db", store_url, "--cluster", cluster, "--flows", str(new)).exit_code == 0
    text = run_cli("status", "--db", store_url).stdout
    assert "recommendation: keep learning (learning is learning)" in text, text
    report = json.loads(run_cli("status", "--db", store_url, "--format", "json").stdout)["readiness"]
    assert report["recommendation"] == KEEP_LEARNING
