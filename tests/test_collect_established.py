"""End to end with real packets: a connection opened before `netpol-gen collect` starts is learnt.

Stands in for a database pool connected long before the collector was deployed: a client pod holds
a TCP connection to a Service ClusterIP that nftables DNATs to the backend's targetPort, on an
edge nothing else uses, and sends nothing while the collector runs. Capture therefore never sees
it start; the collector must learn it from the kernel's tables of open connections: the bed's
conntrack table (the DNAT entry's reply tuple names the backend) or, with conntrack reading off,
the pods' own socket tables (the backend holds the listening socket). Then the store holds exactly
client workload -> backend workload on the targetPort, marked with its source; `status` counts it;
`export --explain` says it was never seen starting; the policies allow that connection and deny
its reverse and its ephemeral-port forms.
"""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from netpol_gen.store import schema as t
from tests.collect_netns import Bed, JsonLog, pod_doc

NETPOL = [str(Path(sys.executable).parent / "netpol-gen")]
# Addresses no other bed test uses: the collector's socket source reads every namespace on the machine.
CLIENT, BACKEND, CLUSTER_IP = "10.199.31.10", "10.199.32.20", "10.199.130.10"
SERVICE_PORT, TARGET_PORT = 6432, 5432

# Accepts connections and holds them open; prints a line per accepted connection.
HOLD_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("listening", flush=True)
held = []
while True:
    c, peer = s.accept(); held.append(c); print("accepted", peer[1], flush=True)
"""
# Connects, says so, and holds the connection until its stdin closes.
HOLD_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", c.getsockname()[1], flush=True)
sys.stdin.read()
"""
CONNTRACK_PROBE = r"""
import sys
from netpol_gen.collector.kernel_tables import TableUnreadable, read_conntrack
try:
    print(len([e for e in read_conntrack() if e.reply_src == sys.argv[1]]))
except TableUnreadable as exc:
    print("unreadable:", exc)
"""


def _snapshot(t0: float) -> list[dict[str, Any]]:
    return [
        *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("shop", "data")),
        pod_doc("shop", "app-1", CLIENT, "node-a", {"app": "app"}, ("Deployment", "app"), t0 - 100),
        pod_doc("data", "pg-0", BACKEND, "node-b", {"app": "pg"}, ("StatefulSet", "pg"), t0 - 100,
                ports=[{"name": "pg", "containerPort": TARGET_PORT, "protocol": "TCP"}]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "data", "name": "pg"},
         "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "pg"},
                  "ports": [{"port": SERVICE_PORT, "targetPort": "pg", "protocol": "TCP"}]}},
    ]


def _popen(bed: Bed, pod: str, script: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*bed.exec_args(pod), sys.executable, "-c", script, *args], stdin=stdin,
                            stdout=subprocess.PIPE, text=True)
    return proc


@pytest.fixture
def held(bed: Bed) -> Iterator[tuple[Bed, int]]:
    """The bed with the client's connection through the ClusterIP open and accepted; yields the client port.

    One such bed on the machine at a time (a lock file, held until the test ends): the socket source
    reads every namespace, so the other parametrisation's bed on another worker would be found too."""
    with (Path(tempfile.gettempdir()) / "netpol-gen-established-bed.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _held(bed)


def _held(bed: Bed) -> Iterator[tuple[Bed, int]]:
    bed.bridge("bra", "10.199.31.1/24")
    bed.bridge("brb", "10.199.32.1/24")
    bed.pod("app", "bra", CLIENT)
    bed.pod("pg", "brb", BACKEND)
    bed.nft(f"""table ip npg {{
  chain pre {{ type nat hook prerouting priority -100;
    ip daddr {CLUSTER_IP} tcp dport {SERVICE_PORT} dnat to {BACKEND}:{TARGET_PORT}
  }}
}}""")
    server = _popen(bed, "pg", HOLD_SERVER, str(TARGET_PORT))
    client = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = _popen(bed, "app", HOLD_CLIENT, CLUSTER_IP, str(SERVICE_PORT), stdin=subprocess.PIPE)
        assert client.stdout is not None
        port = int(client.stdout.readline().split()[1])
        assert server.stdout.readline().split() == ["accepted", str(port)]  # the handshake passed the host
        yield bed, port
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()


def _edges(url: str) -> dict[tuple[str, str, int, str], tuple[int, dict[str, int]]]:
    """(source, destination, port, protocol) -> (connections, {source: connections not captured})."""
    engine = sa.create_engine(url)
    src, dst = t.identities.alias("src"), t.identities.alias("dst")

    def name(i: Any) -> Any:
        return sa.func.coalesce(i.c.namespace + "/" + i.c.workload_name, i.c.kind + ":" + i.c.ip)

    query = (sa.select(t.edges.c.id, name(src), name(dst), t.edges.c.dst_port, t.edges.c.protocol,
                       t.edges.c.connections)
             .join(src, src.c.id == t.edges.c.src_id).join(dst, dst.c.id == t.edges.c.dst_id))
    with engine.connect() as conn:
        established: dict[int, dict[str, int]] = {}
        for edge_id, source, count in conn.execute(sa.select(t.edge_established)):
            established.setdefault(edge_id, {})[source] = count
        edges = {(a, b, port, proto): (n, established.get(edge_id, {}))
                 for edge_id, a, b, port, proto, n in conn.execute(query)}
    engine.dispose()
    return edges


@pytest.mark.parametrize("source", ["conntrack", "sockets"])
def test_connection_open_before_collect_is_learnt(held: tuple[Bed, int], tmp_path: Path, source: str) -> None:
    bed, client_port = held
    if source == "conntrack":
        probe = subprocess.run([*bed.exec_args("host"), sys.executable, "-c", CONNTRACK_PROBE, BACKEND],
                               capture_output=True, text=True, check=True).stdout.strip()
        if probe != "1":
            print(f"skipped: the bed's conntrack table cannot be read or has no entry for the DNAT ({probe})")
            pytest.skip(f"conntrack over netlink unavailable here: {probe}")
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump_all(_snapshot(time.time())))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    jsonl = tmp_path / "flows.jsonl"
    proc = subprocess.Popen([*bed.exec_args("host"), *NETPOL, "collect", "--cluster", str(snapshot), "--db", url,
                             "--output", f"jsonl:{jsonl}", "--interval", "1", "--established-sources", source,
                             "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    try:
        log = JsonLog(proc)
        scanned = log.wait("the first scan of open connections", lambda e: e["msg"] == "open connections scanned")
        assert scanned["sources"] == [source] and scanned.get(source) == 1, scanned
        log.wait("its batch written", lambda e: e["msg"] == "batch written" and e["edges"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.wait("stopped", lambda e: e["msg"] == "stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [e for e in log.seen if e["level"] in ("warning", "error")], log.seen
    # Exactly the one connection: client workload -> backend workload on the targetPort, from `source`;
    # no edge the other way, none to the client's ephemeral port, none to the Service port.
    assert _edges(url) == {("shop/app", "data/pg", TARGET_PORT, "TCP"): (1, {source: 1})}
    flows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # to the backend's address and port, which conntrack's reply tuple and the server's socket both name
    assert [(f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"]) for f in flows] == [
        (CLIENT, client_port, BACKEND, TARGET_PORT)]

    status = subprocess.run([*NETPOL, "status", "--db", url, "--format", "json"], capture_output=True, text=True,
                            check=True)
    summary = json.loads(status.stdout)
    assert summary["learnt_from"] == {source: 1} and summary["established_only"] == 1

    out = subprocess.run([*NETPOL, "export", "--db", url, "--explain"], capture_output=True, text=True, check=True)
    assert f"never seen starting: open connections read from {source}" in out.stdout
    policies = tmp_path / "policies"
    subprocess.run([*NETPOL, "export", "--db", url, "--output-dir", str(policies)], check=True, capture_output=True)
    ports = {p["port"] for doc in yaml.safe_load_all(out.stdout) if doc for rules in
             (doc["spec"].get("ingress", []), doc["spec"].get("egress", [])) for rule in rules
             for p in rule.get("ports", [])}
    assert ports == {"pg"}, ports  # the backend's named container port (5432): no ephemeral or Service port
    now = time.time()
    tried = {  # the connection as the client made it, its reverse, its ephemeral-port forms, another port
        "made": {"src_ip": CLIENT, "dst_ip": CLUSTER_IP, "dst_port": SERVICE_PORT, "src_port": client_port},
        "reverse": {"src_ip": BACKEND, "dst_ip": CLIENT, "dst_port": client_port},
        "reply port": {"src_ip": BACKEND, "dst_ip": CLIENT, "dst_port": TARGET_PORT},
        "other port": {"src_ip": CLIENT, "dst_ip": BACKEND, "dst_port": TARGET_PORT + 1},
    }
    path = tmp_path / "tried.jsonl"
    path.write_text("".join(json.dumps({**f, "protocol": "TCP", "ts": now}) + "\n" for f in tried.values()))
    checked = subprocess.run([*NETPOL, "check", "--cluster", str(snapshot), "--policies", str(policies),
                              "--flows", str(path), "--format", "jsonl"], capture_output=True, text=True)
    verdicts = [json.loads(line)["allowed"] for line in checked.stdout.splitlines()]
    assert verdicts == [True, False, False, False], checked.stdout + checked.stderr
