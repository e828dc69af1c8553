"""`netpol-gen status`: edges by the hour they were first seen, new edges in the last hour, and whether
learning has settled (no new edge while deliveries still arrive), read from --db (and, in
test_serve.py, from --server)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.model.listings import Deliveries, EdgeRow
from netpol_gen.store.progress import summarize
from tests.cli import run_cli

NOW = 1_800_000_000.0  # a whole hour: 500000 * 3600


def _edge(first_seen: float | None, port: int = 80) -> EdgeRow:
    pod = Identity(IdentityKind.POD, "shop", "Deployment", "web")
    return EdgeRow(pod, pod, port, "TCP", 1, None, None, first_seen, first_seen, ())


def test_timeline_counts_edges_by_hour_first_seen_with_running_totals() -> None:
    edges = [_edge(None, 1), _edge(NOW - 30 * 3600, 2), _edge(NOW - 2.5 * 3600, 3), _edge(NOW - 2.2 * 3600, 4),
             _edge(NOW - 600, 5)]
    status = summarize(edges, Deliveries(10, 500, NOW - 5), NOW, hours=24)
    assert [(h.hour, h.new_edges, h.total_edges) for h in status.timeline] == [
        ("2027-01-15T05:00:00Z", 2, 4), ("2027-01-15T07:00:00Z", 1, 5)]
    assert (status.edges, status.new_last_hour, status.state) == (5, 1, "learning")


def test_settled_needs_deliveries_still_arriving() -> None:
    edges = [_edge(NOW - 5 * 3600)]
    assert summarize(edges, Deliveries(3, 30, NOW - 60), NOW, 24).state == "settled"
    assert summarize(edges, Deliveries(3, 30, NOW - 2 * 3600), NOW, 24).state == "idle"
    assert summarize([], Deliveries(0, 0, None), NOW, 24).state == "empty"


def test_status_command_on_a_store_with_fresh_traffic(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
    flows = tmp_path / "flows.jsonl"
    now = time.time()
    lines = [json.loads(line) for line in (example / "flows.jsonl").read_text().splitlines() if line.strip()]
    first, last = min(line["ts"] for line in lines), max(line["ts"] for line in lines)
    squeeze = 3000 / (last - first)  # as if all captured, in the same order, within the last hour
    flows.write_text("".join(json.dumps({**line, "ts": now - 3100 + (line["ts"] - first) * squeeze}) + "\n"
                             for line in lines))
    db = f"sqlite:///{tmp_path / 'store.db'}"
    result = run_cli("import", "--db", db, "--cluster", str(example / "cluster.yaml"), "--flows",
                                 str(flows))
    assert result.exit_code == 0, result.stderr
    result = run_cli("status", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "learning: new connections appeared in the last hour" in result.stdout
    assert "deliveries: 1 batches and imports, 94 flows" in result.stdout
    status = json.loads(run_cli("status", "--db", db, "--format", "json").stdout)
    assert status["new_last_hour"] == status["edges"] > 0
    assert status["timeline"][-1]["total_edges"] == status["edges"]
