"""End to end on this machine: two `netpol-gen collect` processes feed one `netpol-gen serve` while
real traffic runs, and both are restarted mid-run; on SQLite and on PostgreSQL.

The netns test bed (tests/collect_netns.py) gives two nodes, each a bridge with its pods; one
collector per node captures on that node's pod interfaces only (``--iface``), with the same static
``--cluster`` snapshot, as a DaemonSet's pods would. ``serve`` runs in this process's namespace (it
must reach PostgreSQL on 127.0.0.1) and the collectors reach it over a veth, as nodes reach the
store's pod. The run:

1. both nodes make traffic; the store is awaited until it holds it;
2. the store goes down (SIGTERM); both nodes make traffic; collector A is stopped (SIGTERM) while
   the store is still down, so it exits with its last batch in its ``--spool`` file, and node B's
   collector spools its own;
3. with A down, pods of node B make traffic (some of it to node A's pods: the initiator's node
   records a connection, so none of it depends on A);
4. A starts again with the same spool, the store starts again on the same port and database, and
   both collectors drain their spools;
5. both nodes make traffic; both collectors are stopped.

Then the store must hold exactly the connections the test made: every (source workload,
destination workload, port, protocol) with the initiator as source, the connection count equal to
the connections made (a spooled batch delivered twice, or a connection seen on both nodes, would
count twice; one lost would count less). Traffic is made only while the collector of the
initiator's node runs: a connection made while nothing captures is lost by design.

And ``export --server`` must equal ``export --db`` of a local import of the flows the collectors
wrote with ``--output jsonl:`` (one file per collector process). Why exactly equal: every interval
goes to both of a collector's sinks, so the JSONL files hold exactly the flows that were attributed
into the batches; the local import attributes them with the same Ingest against the same snapshot;
the store merges edges by sums, minimums and maximums, which do not depend on how the flows were
cut into batches, in which order batches arrived, from which collector, or how often a batch was
retried (ids make retries no-ops). The only per-process state, the deduplication of a connection
sighted twice, is moot when every connection is sighted once, which the JSONL is checked for. JSONL
carries no DNS answers, so no traffic here resolves a name to an address the store would name
(test_collect_netns covers names).

Synchronisation is on the collectors' JSON logs, the store's /readyz and the store's contents, each
with a deadline. Every namespace, link, nft rule and process is removed in finalizers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from netpol_gen.service.client import Retry, StoreClient
from tests.cli import run_cli
from tests.collect_netns import NO_SCANS, Bed, JsonLog, pod_doc
from tests.serving import TOKEN, Serve, free_port

pytestmark = [pytest.mark.root]

NETPOL = str(Path(sys.executable).parent / "netpol-gen")
CLUSTER_IP = "10.199.100.10"
DEADLINE = 30.0  # seconds for any one awaited event: generous, never waited out when all is well
Edge = tuple[str, str, int, str]  # (source workload, destination workload, port, protocol)

# name, node (bridge), address, namespace, owner, labels, ports
PODS: list[tuple[str, str, str, str, tuple[str, str], list[dict[str, Any]]]] = [
    ("web-1", "node-a", "10.199.1.10", "shop", ("Deployment", "web"),
     [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
    ("coredns-1", "node-a", "10.199.1.53", "dns", ("Deployment", "coredns"),
     [{"containerPort": 53, "protocol": "UDP"}]),
    ("worker-1", "node-a", "10.199.1.60", "shop", ("Deployment", "worker"), []),
    ("api-1", "node-b", "10.199.2.10", "shop", ("Deployment", "api"),
     [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9999, "protocol": "UDP"}]),
    ("api-2", "node-b", "10.199.2.11", "shop", ("Deployment", "api"),
     [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9999, "protocol": "UDP"}]),
    ("db-0", "node-b", "10.199.2.20", "data", ("StatefulSet", "db"), [{"containerPort": 5432, "protocol": "TCP"}]),
    ("probe-1", "node-b", "10.199.2.30", "ops", ("Deployment", "probe"), []),
]
NODES = {"node-a": ("10.199.1.0/24", "10.199.1.1"), "node-b": ("10.199.2.0/24", "10.199.2.1")}
SERVERS: dict[str, dict[str, Any]] = {
    "web-1": {"tcp": [8080]}, "api-1": {"tcp": [8080], "udp": [9999]}, "api-2": {"tcp": [8080], "udp": [9999]},
    "db-0": {"tcp": [5432]}, "coredns-1": {"udp": [53], "dns": {}}}
# What each pod does in one round: a client action and the edge it must become (ClusterIP: the targetPort).
TRAFFIC: dict[str, list[tuple[list[Any], Edge]]] = {
    "web-1": [(["tcp", CLUSTER_IP, 80], ("shop/web", "shop/api", 8080, "TCP")),
              (["udp", "10.199.2.10", 9999], ("shop/web", "shop/api", 9999, "UDP")),
              (["dns", "10.199.1.53", "nowhere.example.test"], ("shop/web", "dns/coredns", 53, "UDP"))],
    "worker-1": [(["tcp", "10.199.2.20", 5432], ("shop/worker", "data/db", 5432, "TCP"))],
    "api-1": [(["tcp", "10.199.2.20", 5432], ("shop/api", "data/db", 5432, "TCP"))],
    "probe-1": [(["tcp", "10.199.1.10", 8080], ("ops/probe", "shop/web", 8080, "TCP")),  # node B to node A
                (["tcp", CLUSTER_IP, 80], ("ops/probe", "shop/api", 8080, "TCP"))],
}


def _node_of(pod: str) -> str:
    return next(node for name, node, *_ in PODS if name == pod)


def _snapshot(t0: float) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                                  for ns in sorted({p[3] for p in PODS})]
    docs += [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "spec": {"podCIDR": cidr},
              "status": {"addresses": [{"type": "InternalIP", "address": gateway}]}}
             for node, (cidr, gateway) in NODES.items()]
    docs += [pod_doc(ns, name, ip, node, {"app": owner[1]}, owner, t0 - 100, ports=ports)
             for name, node, ip, ns, owner, ports in PODS]
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "api"},
                 "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "api"},
                          "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    return docs


@dataclass
class Collector:
    """One node's `netpol-gen collect`, run in the bed's host namespace, its JSON log read as it comes."""

    bed: Bed
    node: str
    args: list[str]
    runs: int = 0
    jsonl: list[Path] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    log: JsonLog | None = None

    def start(self, tmp: Path) -> JsonLog:
        self.runs += 1
        self.jsonl.append(tmp / f"{self.node}.{self.runs}.jsonl")  # one file per run
        interfaces = self.bed.node_interfaces(self.node)
        command = [*self.bed.exec_args("host"), "env", f"NODE_NAME={self.node}", NETPOL, "collect", *self.args,
                   *NO_SCANS,
                   "--spool", str(tmp / f"{self.node}.spool"), "--output", f"jsonl:{self.jsonl[-1]}",
                   *(arg for iface in interfaces for arg in ("--iface", iface))]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.log = JsonLog(self.process)
        self.log.wait(f"capturing on {interfaces}", lambda e: e["msg"] == "interfaces changed"
                      and e["interfaces"] == interfaces, DEADLINE)
        return self.log

    def stop(self) -> JsonLog:
        """SIGTERM; returns the log once the process said it stopped and exited 0."""
        assert self.process is not None and self.log is not None
        self.process.send_signal(signal.SIGTERM)
        self.log.wait("stopped", lambda e: e["msg"] == "stopped", DEADLINE)
        assert self.process.wait(DEADLINE) == 0
        self.process = None
        return self.log

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _build(bed: Bed) -> None:
    for node, (_, gateway) in NODES.items():
        bed.bridge(node, f"{gateway}/24")
    for name, node, ip, *_ in PODS:
        bed.pod(name, node, ip)
    for name, spec in SERVERS.items():
        bed.serve(name, spec)
    bed.nft(f"""table ip npg {{
  chain pre {{ type nat hook prerouting priority -100;
    ip daddr {CLUSTER_IP} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 10.199.2.10, 1 : 10.199.2.11 }} : 8080
  }}
}}""")


def _traffic(bed: Bed, made: Counter[Edge], nodes: tuple[str, ...], repeat: int = 1) -> None:
    """Each pod of ``nodes`` runs its round ``repeat`` times; ``made`` counts the connections by edge."""
    for pod, actions in TRAFFIC.items():
        if _node_of(pod) in nodes:
            bed.client(pod, [action for action, _ in actions] * repeat)
            made.update({edge: repeat for _, edge in actions})


def _stored(url: str) -> Counter[Edge]:
    with StoreClient(url, TOKEN, retry=Retry(deadline=5.0)) as client:
        return Counter({(f"{e.src.namespace}/{e.src.workload_name}", f"{e.dst.namespace}/{e.dst.workload_name}",
                         e.dst_port, e.protocol): e.connections for e in client.edges()})


def _await_store(url: str, made: Counter[Edge]) -> None:
    """Until the store holds exactly ``made``; more than made fails at once (nothing undoes a count)."""
    end = time.monotonic() + DEADLINE
    while (stored := _stored(url)) != made:
        assert not stored - made, f"counted more than made: {stored - made}"
        assert time.monotonic() < end, f"store never held what was made; missing {made - stored}"
        time.sleep(0.1)  # polling interval, not synchronisation


def _cli(*args: str) -> str:
    result = run_cli(*args, env={"NETPOL_GEN_TOKEN": TOKEN})
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _after(since: float, msg: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["msg"] == msg and e["ts"] >= since


def test_two_collectors_and_a_store_restarted_mid_run_lose_and_double_count_nothing(
        bed: Bed, store_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    _build(bed)
    ours, _ = bed.uplink()
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump_all(_snapshot(time.time())))
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    serve = Serve(store_url, f"{ours}:{free_port()}", token, tmp_path / "serve.log")
    args = ["--cluster", str(snapshot), "--server", serve.url, "--token-file", str(token), "--interval", "1",
            "--log-format", "json"]
    a, b = Collector(bed, "node-a", args), Collector(bed, "node-b", args)
    made: Counter[Edge] = Counter()
    try:
        serve.start()
        a.start(tmp_path)
        log_b = b.start(tmp_path)

        # 1. both nodes, the store up
        _traffic(bed, made, ("node-a", "node-b"), repeat=2)
        _await_store(serve.url, made)

        # 2. the store down; A stopped while it is, its last batch left in its spool
        serve.stop()
        assert a.log is not None
        a.log.wait("a fresh interval cut", _after(time.time(), "interval"), DEADLINE)
        _traffic(bed, made, ("node-a",))  # then at once SIGTERM: the final cut is A's only pending batch
        log_a = a.stop()
        left = [e for e in log_a.seen if e["msg"] == "batches left in the spool"]
        assert left and left[-1]["batches"] >= 1, log_a.seen[-8:]
        _traffic(bed, made, ("node-b",))
        log_b.wait("node B's batch spooled", lambda e: e["msg"] == "store unreachable: batch spooled", DEADLINE)

        # 3. A down: node B's pods talk, also to node A's
        _traffic(bed, made, ("node-b",))

        # 4. A again with the same spool, the store again on the same port and database
        log_a = a.start(tmp_path)
        serve.start()
        log_a.wait("A's spool (from its previous run) delivered", lambda e: e["msg"] == "spool delivered", DEADLINE)
        log_b.wait("B's spool delivered", lambda e: e["msg"] == "spool delivered", DEADLINE)

        # 5. both nodes again; then everything is in the store, and stays so once the collectors stop
        _traffic(bed, made, ("node-a", "node-b"))
        _await_store(serve.url, made)
        a.stop()
        b.stop()
        assert _stored(serve.url) == made
        for log in (log_a, log_b):
            assert not [e for e in log.seen if e["level"] == "error" or e["msg"] == "sink failed"], log.seen

        # Every connection sighted once, by its initiator's collector: the JSONL has one line per connection.
        lines = [json.loads(line) for path in (*a.jsonl, *b.jsonl) for line in path.read_text().splitlines()]
        assert len(lines) == sum(made.values()), sorted(
            (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["protocol"], f["ts"])
            for f in lines)
        assert len({(f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["protocol"]) for f in lines}) == len(
            lines)

        local = f"sqlite:///{tmp_path / 'local.db'}"
        flows = [arg for path in (*a.jsonl, *b.jsonl) for arg in ("--flows", str(path))]
        _cli("import", "--db", local, "--cluster", str(snapshot), *flows)
        for command in (["export", "--explain"], ["export", "--format", "json", "--default-deny"],
                        ["flows", "--format", "json"]):
            assert _cli(*command, "--server", serve.url) == _cli(*command, "--db", local), command
    finally:
        a.kill()
        b.kill()
        serve.stop()
    print(f"end to end on {store_url.split(':')[0]}: {time.monotonic() - started:.1f} s")
