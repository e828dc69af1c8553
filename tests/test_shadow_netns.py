"""Shadow sets end to end with real packets: two `netpol-gen collect` (one per node of the netns bed of
tests/collect_netns.py, set up as in tests/test_serve_e2e.py) feed one `netpol-gen serve` process.

A proposed set that admits everything the pods do except one edge (shop/worker to data/db on 5432: db's
ingress admits only shop/api) is added with `shadow add --server` before the traffic. Then:

1. once the store holds the connections made (awaited on its contents), `watch --server` already shows
   exactly that edge, with as many connections as were made, and `/metrics` counts them on db's ingress:
   denials are written in the very transaction of the batch that brought the edge, so they are there
   within the interval that delivered it;
2. serve is stopped (SIGTERM) while the worker talks again (the collectors spool), and started again on
   the same database: the store ends holding every connection once, and the denials match them;
3. the set is "enforced" by an nftables drop of that edge on the host: the worker's attempt times out;
   the collector counts it as an unanswered attempt (its SYN retransmitted, never answered), learns it
   once (not once per retransmission) and `watch` shows it (denied in force, seen as well): the store
   counts the attempt on its edge (`flows`' ``unanswered``) and `watch` lists it under set in-force.

Stands in for a cluster running netpol-gen while a proposed set is watched before it is enforced.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tests.collect_netns import CLIENT, Bed, run
from tests.serving import TOKEN, free_port
from tests.test_serve_e2e import DEADLINE, Collector, Edge, Serve, _await_store, _build, _cli, _snapshot, _traffic

pytestmark = [pytest.mark.root]

OMITTED: Edge = ("shop/worker", "data/db", 5432, "TCP")
PROPOSED = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "db", "namespace": "data"},
    "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
                  "podSelector": {"matchLabels": {"app": "api"}}}],
        "ports": [{"port": 5432, "protocol": "TCP"}]}]},
}


def _watched(url: str, set_name: str = "proposed") -> list[tuple[str, str, int, str, int, str, int]]:
    """``watch``'s lines, every set's: those of ``set_name`` as (edge, connections, side, unanswered)."""
    lines = _cli("watch", "--server", url, "--format", "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    short = {"shop/Deployment/worker": "shop/worker", "data/StatefulSet/db": "data/db"}
    assert {r["set"] for r in records} <= {"proposed", "in-force"}
    return [(short.get(r["src"], r["src"]), short.get(r["dst"], r["dst"]), r["port"], r["protocol"],
             r["connections"], r["side"], r["unanswered"]) for r in records if r["set"] == set_name]


def _unanswered(url: str) -> dict[Edge, int]:
    """``flows``' edges with attempts never answered."""
    def name(end: dict[str, str]) -> str:
        return f"{end['namespace']}/{end['workload_name']}"
    return {(name(e["source"]), name(e["destination"]), e["port"], e["protocol"]): e["unanswered"]
            for e in json.loads(_cli("flows", "--server", url, "--format", "json")) if e["unanswered"]}


def _counted(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("netpol_gen_denied_connections_total{")}


def test_a_proposed_set_missing_one_edge_reports_it_live_and_a_serve_restart_loses_nothing(
        bed: Bed, tmp_path: Path) -> None:
    _build(bed)
    ours, _ = bed.uplink()
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump_all(_snapshot(time.time())))
    (tmp_path / "proposed.yaml").write_text(yaml.safe_dump(PROPOSED))
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    serve = Serve(f"sqlite:///{tmp_path / 'store.db'}", f"{ours}:{free_port()}", token, tmp_path / "serve.log")
    args = ["--cluster", str(snapshot), "--server", serve.url, "--token-file", str(token), "--interval", "1",
            "--log-format", "json"]
    a, b = Collector(bed, "node-a", args), Collector(bed, "node-b", args)
    made: Counter[Edge] = Counter()
    series = ('netpol_gen_denied_connections_total{direction="ingress",namespace="data",set="proposed",'
              'workload="StatefulSet/db"}')
    try:
        serve.start()
        _cli("shadow", "add", "proposed", str(tmp_path / "proposed.yaml"), "--server", serve.url)
        a.start(tmp_path)
        log_b = b.start(tmp_path)
        _traffic(bed, made, ("node-a", "node-b"), repeat=2)
        _await_store(serve.url, made)
        assert _watched(serve.url) == [(*OMITTED, made[OMITTED], "ingress", 0)]
        assert _counted(serve.url) == {series: made[OMITTED]}

        serve.stop()
        _traffic(bed, made, ("node-a", "node-b"))
        log_b.wait("node B's batch spooled", lambda e: e["msg"] == "store unreachable: batch spooled", DEADLINE)
        serve.start()
        _await_store(serve.url, made)
        assert _watched(serve.url) == [(*OMITTED, made[OMITTED], "ingress", 0)]
        assert _counted(serve.url) == {series: made[OMITTED]}

        # 3. the set enforced: an nftables drop on the host stands in for the CNI; the worker's attempt
        # times out, yet its SYN left the worker's interface, so it is learnt and reported as denied
        bed.nft("""table ip npgdeny {
  chain deny { type filter hook forward priority 0;
    ip saddr 10.199.1.60 ip daddr 10.199.2.20 tcp dport 5432 drop
  }
}""")
        attempt = run(*bed.exec_args("worker-1"), sys.executable, "-c", CLIENT,
                      json.dumps([["tcp", "10.199.2.20", 5432]]), check=False)
        assert attempt.returncode != 0 and "timed out" in attempt.stderr  # dropped, never answered
        made[OMITTED] += 1  # once: its retransmitted SYNs (across interval cuts) are no new connections
        assert a.log is not None
        a.log.wait("the attempt counted unanswered", lambda e: e["msg"] == "interval"
                   and e.get("unanswered_total", 0) >= 1, DEADLINE)
        _await_store(serve.url, made)
        assert _watched(serve.url) == [(*OMITTED, made[OMITTED], "ingress", 0)]
        # and the attempt arrives as never answered: in the store, and in watch under the policies in force
        # (none watched here, so no policy is named and the side is unknown)
        assert _unanswered(serve.url) == {OMITTED: 1}
        assert _watched(serve.url, "in-force") == [(*OMITTED, 1, "unknown", 1)]
        a.stop()
        b.stop()
    finally:
        a.kill()
        b.kill()
        serve.stop()
