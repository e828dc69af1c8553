"""End to end with real packets: `netpol-gen collect` on a cluster of network namespaces.

Two nodes (bridges routed through one host namespace, where the collector runs), pods as namespaces,
a Service whose ClusterIP nftables DNATs to two backends, a DNS server pod answering real queries,
an external host reached by a name it resolved, a pod restarted with a new IP and an IP taken over
by a pod of another workload, with snapshot times matching the switch. The collector is
synchronised on through its log (interfaces seen, batches written); it is stopped with SIGTERM.
Then the store must hold exactly the connections made, attributed to the right workloads, ports
(the targetPort behind the Service) and direction, and the exported policies must allow exactly
that traffic (``check`` on the JSONL the collector wrote, and on traffic that was never made); the
pcap it wrote reads back into the same connections.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from netpol_gen.ingest.pcap import read_capture
from netpol_gen.model.flows import Flow
from netpol_gen.store import schema as t
from tests.collect_netns import NO_SCANS, Bed, JsonLog, pod_doc

NETPOL = [str(Path(sys.executable).parent / "netpol-gen")]
CLUSTER_IP = "10.199.100.10"
EXTERNAL = "10.199.9.9"
# seconds from writing the snapshot to the pod restart / IP takeover in it; phase 1 traffic must end before,
# with room for a loaded machine
SWITCH_DELAY = 15.0


def _snapshot(t0: float, switch: float) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("shop", "data", "dns", "ops")
    ]
    docs += [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr},
              "status": {"addresses": [{"type": "InternalIP", "address": gw}]}}
             for name, cidr, gw in (("node-a", "10.199.1.0/24", "10.199.1.1"),
                                    ("node-b", "10.199.2.0/24", "10.199.2.1"))]
    for ns, name, owner_kind, owner in (("shop", "web-1", "Deployment", "web"), ("shop", "api-1", "Deployment", "api"),
                                        ("data", "db-0", "StatefulSet", "db"),
                                        ("dns", "coredns-1", "Deployment", "coredns"),
                                        ("shop", "worker-rs", "Deployment", "worker"),
                                        ("shop", "batch-rs", "Deployment", "batch"),
                                        ("ops", "probe-rs", "Deployment", "probe")):
        if name.endswith("-rs"):
            docs.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                "namespace": ns, "name": name,
                "ownerReferences": [{"kind": owner_kind, "name": owner, "controller": True}]}})
    http = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9999, "protocol": "UDP"}]
    docs += [
        pod_doc("shop", "web-1", "10.199.1.10", "node-a", {"app": "web"}, ("Deployment", "web"), t0 - 100),
        pod_doc("dns", "coredns-1", "10.199.1.53", "node-a", {"app": "coredns"}, ("Deployment", "coredns"), t0 - 100,
             ports=[{"containerPort": 53, "protocol": "UDP"}]),
        pod_doc("shop", "api-1", "10.199.2.10", "node-b", {"app": "api"}, ("Deployment", "api"), t0 - 100, ports=http),
        pod_doc("shop", "api-2", "10.199.2.11", "node-b", {"app": "api"}, ("Deployment", "api"), t0 - 100, ports=http),
        pod_doc("data", "db-0", "10.199.2.20", "node-b", {"app": "db"}, ("StatefulSet", "db"), t0 - 100,
             ports=[{"containerPort": 5432, "protocol": "TCP"}]),
        # restarted: the same workload, a new pod with a new IP from the switch on
        pod_doc("shop", "worker-old", "10.199.1.60", "node-a", {"app": "worker"}, ("ReplicaSet", "worker-rs"),
             t0 - 100, switch),
        pod_doc("shop", "worker-new", "10.199.1.61", "node-a", {"app": "worker"}, ("ReplicaSet", "worker-rs"), switch),
        # 10.199.1.50 changes hands: batch (shop) until the switch, probe (ops) after
        pod_doc("shop", "batch-1", "10.199.1.50", "node-a", {"app": "batch"}, ("ReplicaSet", "batch-rs"),
             t0 - 100, switch),
        pod_doc("ops", "probe-1", "10.199.1.50", "node-a", {"app": "probe"}, ("ReplicaSet", "probe-rs"), switch),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "shop", "name": "api"},
         "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "api"},
                  "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}},
    ]
    return docs


def _learnt(url: str) -> tuple[dict[tuple[str, str, int, str], int], set[str]]:
    """Edges as (source, destination, port, protocol) -> connections, by workload or kind:address; DNS names."""
    engine = sa.create_engine(url)
    src, dst = t.identities.alias("src"), t.identities.alias("dst")

    def name(i: Any) -> Any:
        return sa.func.coalesce(i.c.namespace + "/" + i.c.workload_name, i.c.kind + ":" + i.c.ip)

    query = (sa.select(name(src), name(dst), t.edges.c.dst_port, t.edges.c.protocol, t.edges.c.connections)
             .join(src, src.c.id == t.edges.c.src_id).join(dst, dst.c.id == t.edges.c.dst_id))
    with engine.connect() as conn:
        edges = {(a, b, port, proto): n for a, b, port, proto, n in conn.execute(query)}
        names = {row[0] for row in conn.execute(sa.select(t.identity_names.c.name))}
    engine.dispose()
    return edges, names


def test_collect_real_traffic(bed: Bed, tmp_path: Path) -> None:
    bed.bridge("bra", "10.199.1.1/24")
    bed.bridge("brb", "10.199.2.1/24")
    bed.bridge("brx", "10.199.9.1/24")
    for name, bridge, ip in (("web", "bra", "10.199.1.10"), ("dns", "bra", "10.199.1.53"),
                             ("worker-old", "bra", "10.199.1.60"), ("batch", "bra", "10.199.1.50"),
                             ("api-1", "brb", "10.199.2.10"), ("api-2", "brb", "10.199.2.11"),
                             ("db", "brb", "10.199.2.20")):
        bed.pod(name, bridge, ip)
    bed.pod("ext", "brx", EXTERNAL, prefix="ext")  # not a pod: its interface is not captured
    for name in ("api-1", "api-2"):
        bed.serve(name, {"tcp": [8080], "udp": [9999]})
    bed.serve("db", {"tcp": [5432]})
    bed.serve("ext", {"tcp": [443]})
    bed.serve("dns", {"udp": [53], "dns": {"shop.example.test": EXTERNAL}})
    bed.nft(f"""table ip npg {{
  chain pre {{ type nat hook prerouting priority -100;
    ip daddr {CLUSTER_IP} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 10.199.2.10, 1 : 10.199.2.11 }} : 8080
  }}
}}""")
    t0 = time.time()
    switch = t0 + SWITCH_DELAY
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump_all(_snapshot(t0, switch)))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    jsonl, pcap = tmp_path / "flows.jsonl", tmp_path / "frames.pcap"
    proc = subprocess.Popen([*bed.exec_args("host"), *NETPOL, "collect", "--cluster", str(snapshot), "--db", url,
                             "--output", f"jsonl:{jsonl}", "--output", f"pcap:{pcap}", "--interval", "1",
                             "--log-format", "json", *NO_SCANS],
                            stderr=subprocess.PIPE, text=True)
    try:
        log = JsonLog(proc)
        log.wait("capturing on the 7 pod interfaces", lambda e: len(e.get("interfaces") or ()) == 7
                 and e["msg"] == "interfaces changed")
        answers = bed.client("web", [*[["tcp", CLUSTER_IP, 80]] * 4, ["dns", "10.199.1.53", "shop.example.test"],
                                     ["udp", "10.199.2.10", 9999]])
        assert answers == {"shop.example.test": EXTERNAL}
        bed.client("web", [["tcp", answers["shop.example.test"], 443]])
        bed.client("worker-old", [["tcp", "10.199.2.20", 5432]])
        bed.client("batch", [["tcp", "10.199.2.20", 5432]])
        assert time.time() < switch - 0.5, "phase 1 traffic took longer than the snapshot allowed"
        log.wait("a batch written with the first traffic", lambda e: e["msg"] == "batch written" and e["edges"])
        # The restart and the IP takeover: old pods gone, new ones (new interfaces) at the snapshot's time.
        bed.remove_pod("worker-old")
        bed.remove_pod("batch")
        time.sleep(max(switch - time.time(), 0) + 0.1)  # the wall-clock time the snapshot says they switch
        added = [bed.pod("worker-new", "bra", "10.199.1.61"), bed.pod("probe", "bra", "10.199.1.50")]
        log.wait("the new pods' interfaces", lambda e: e["msg"] == "interfaces changed"
                 and set(added) <= set(e["interfaces"]))
        bed.client("worker-new", [["tcp", "10.199.2.20", 5432]])
        bed.client("probe", [["tcp", CLUSTER_IP, 80], ["tcp", CLUSTER_IP, 80]])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log.wait("the last interval delivered", lambda e: e["msg"] == "stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [e for e in log.seen if e["level"] in ("warning", "error")], log.seen
    edges, names = _learnt(url)
    assert edges == {
        ("shop/web", "shop/api", 8080, "TCP"): 4,  # through the ClusterIP: the targetPort, both backends one edge
        ("shop/web", "dns/coredns", 53, "UDP"): 1,
        ("shop/web", f"external:{EXTERNAL}", 443, "TCP"): 1,
        ("shop/web", "shop/api", 9999, "UDP"): 1,
        ("shop/worker", "data/db", 5432, "TCP"): 2,  # before and after the restart
        ("shop/batch", "data/db", 5432, "TCP"): 1,  # 10.199.1.50 before the switch
        ("ops/probe", "shop/api", 8080, "TCP"): 2,  # 10.199.1.50 after it
    }
    assert names == {"shop.example.test"}  # the external address, named by the DNS answer seen

    policies = tmp_path / "policies"
    subprocess.run([*NETPOL, "export", "--db", url, "--output-dir", str(policies)], check=True, capture_output=True)
    flows = sorted((f["src_ip"], f["dst_ip"], f["dst_port"], f["protocol"])
                   for f in map(json.loads, jsonl.read_text().splitlines()))
    assert flows == sorted([
        *[("10.199.1.10", CLUSTER_IP, 80, "TCP")] * 4, ("10.199.1.10", "10.199.1.53", 53, "UDP"),
        ("10.199.1.10", "10.199.2.10", 9999, "UDP"), ("10.199.1.10", EXTERNAL, 443, "TCP"),
        ("10.199.1.60", "10.199.2.20", 5432, "TCP"), ("10.199.1.50", "10.199.2.20", 5432, "TCP"),
        ("10.199.1.61", "10.199.2.20", 5432, "TCP"), *[("10.199.1.50", CLUSTER_IP, 80, "TCP")] * 2,
    ])  # each connection once, from its initiator, as the client addressed it
    replayed = read_capture(str(pcap))  # the frames as captured, for `import --pcap` elsewhere
    assert sorted((f.src_ip, f.dst_ip, f.dst_port, f.protocol) for f in replayed.records
                  if isinstance(f, Flow)) == flows
    allowed = subprocess.run([*NETPOL, "check", "--cluster", str(snapshot), "--policies", str(policies),
                              "--flows", str(jsonl)], capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    now = time.time()
    never = [  # traffic nobody made: each must be denied
        {"src_ip": "10.199.1.10", "dst_ip": "10.199.2.20", "dst_port": 5432},  # web -> db
        {"src_ip": "10.199.2.10", "dst_ip": "10.199.1.10", "dst_port": 8080},  # api -> web (reverse)
        {"src_ip": "10.199.1.10", "dst_ip": "10.199.2.10", "dst_port": 9090},  # web -> api, other port
        {"src_ip": "10.199.1.50", "dst_ip": "10.199.2.20", "dst_port": 5432},  # probe (the IP's new owner) -> db
        {"src_ip": "10.199.1.61", "dst_ip": "10.199.2.10", "dst_port": 8080},  # worker -> api
    ]
    never_path = tmp_path / "never.jsonl"
    never_path.write_text("".join(json.dumps({**f, "protocol": "TCP", "ts": now}) + "\n" for f in never))
    denied = subprocess.run([*NETPOL, "check", "--cluster", str(snapshot), "--policies", str(policies),
                             "--flows", str(never_path), "--format", "jsonl"], capture_output=True, text=True)
    verdicts = [json.loads(line) for line in denied.stdout.splitlines()]
    assert len(verdicts) == len(never) and denied.returncode == 1, denied.stdout + denied.stderr
    assert not [v for v in verdicts if v["allowed"]], verdicts
