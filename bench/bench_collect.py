"""Benchmark `netpol-gen collect` against tcpdump on the netns test bed: new TCP connections/s.

One node (a bridge in a host namespace), client pods opening and resetting short TCP connections at a
paced rate to server pods that accept and close. The collector (writing to a SQLite store, with a
cluster snapshot of the bed) and one ``tcpdump -w /dev/null`` per pod interface with the same kernel
filter and buffer size capture side by side in the same run. For each target rate it prints the rate
achieved, both tools' kernel drops, the connections the collector stored as flows, and the collector's
CPU (% of one core, from /proc/PID/stat over the generation window) and RSS.

    sudo .venv/bin/python -m bench.bench_collect [--rates 1000,5000,20000,40000] [--seconds 3]

Needs root; everything lives in namespaces it creates (10.199.x.y) and removes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import yaml

from netpol_gen.collector.capture import BPF_FILTER, RCVBUF
from tests.collect_netns import Bed, unavailable

NETPOL = str(Path(sys.executable).parent / "netpol-gen")
CLIENTS, SERVERS, PORT = 4, 2, 8080
INTERVAL = 10  # the default: the per-interval store write is part of the cost
TICK = os.sysconf("SC_CLK_TCK")

# The same generator and an accept-and-close server in C, used when gcc is there: Python's own
# per-connection overhead caps the generator near 10k connections/s on two cores.
CONNRATE_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "server")) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (void *)&a, sizeof a) || listen(s, 65535)) { perror("listen"); return 1; }
        printf("ready\n"); fflush(stdout);
        for (;;) { int c = accept(s, 0, 0); if (c >= 0) close(c); }
    }
    if (argc != 6) { fprintf(stderr, "usage: connrate server PORT | client HOSTS PORT RATE SECONDS\n"); return 2; }
    struct sockaddr_in hosts[64]; int n = 0;
    for (char *h = strtok(argv[2], ","); h && n < 64; h = strtok(0, ",")) {
        hosts[n] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, h, &hosts[n++].sin_addr);
    }
    double rate = atof(argv[4]), seconds = atof(argv[5]), start = now();
    long total = (long)(rate * seconds), made = 0;
    struct linger l = {1, 0};
    while (made < total) {
        double t = now() - start;
        if (t >= seconds) break;
        long due = (long)(t * rate) + 1;
        if (due > total) due = total;
        if (made >= due) { usleep(100); continue; }
        while (made < due) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            connect(s, (void *)&hosts[made % n], sizeof hosts[0]);
            close(s); made++;
        }
    }
    printf("%ld %f\n", made, now() - start);
    return 0;
}
"""

# Paced connect + RST close (SO_LINGER 0: no TIME_WAIT, so ports do not run out); prints how many.
GENERATOR = r"""
import socket, struct, sys, time
hosts, rate, seconds = sys.argv[1].split(","), float(sys.argv[2]), float(sys.argv[3])
linger = struct.pack("ii", 1, 0)
made, start = 0, time.perf_counter()
end = start + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    due = min(int((now - start) * rate) + 1, int(seconds * rate))
    while made < due:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        try:
            s.connect((hosts[made % len(hosts)], 8080))
        except OSError:
            pass
        s.close()
        made += 1
    if made >= seconds * rate:
        time.sleep(max(end - time.perf_counter(), 0))
        break
print(made, time.perf_counter() - start)
"""


def _snapshot(pods: list[tuple[str, str]]) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.199.1.0/24"}},
    ]
    for name, ip in pods:
        docs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"namespace": "bench", "name": name, "uid": name,
                                  "labels": {"app": name.rstrip("0123456789")}},
                     "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
                     "status": {"phase": "Running", "podIP": ip}})
    return docs


class _Totals:
    """Flows and kernel drops summed from the collector's per-interval log lines (read on a thread,
    so that logging never blocks the collector)."""

    def __init__(self, log: IO[str]) -> None:
        self.flows = self.drops = 0
        threading.Thread(target=self._read, args=(log,), daemon=True).start()

    def _read(self, log: IO[str]) -> None:
        for line in log:
            entry = json.loads(line)
            if entry["msg"] == "interval":
                self.flows += entry["flows"]
                self.drops += entry["kernel_drops"]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def _connrate(work: Path) -> str | None:
    """The C generator, compiled into ``work``; None without gcc."""
    if shutil.which("gcc") is None:
        return None
    (work / "connrate.c").write_text(CONNRATE_C)
    subprocess.run(["gcc", "-O2", "-o", str(work / "connrate"), str(work / "connrate.c")], check=True)
    return str(work / "connrate")


def _serve(bed: Bed, name: str, connrate: str | None) -> None:
    if connrate is None:
        bed.serve(name, {"tcp": [PORT]})
        return
    proc = subprocess.Popen([*bed.exec_args(name), connrate, "server", str(PORT)], stdout=subprocess.PIPE, text=True)
    bed.servers.append(proc)  # the bed stops it
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def _step(bed: Bed, rate: int, seconds: float, servers: list[str], totals: _Totals, pid: int,
          ifaces: list[str], connrate: str | None) -> dict[str, float]:
    dumps = [subprocess.Popen([*bed.exec_args("host"), "tcpdump", "-n", "-i", iface, "-B", str(RCVBUF // 1024),
                               "-w", "/dev/null", BPF_FILTER], stderr=subprocess.PIPE, text=True)
             for iface in ifaces]
    for dump in dumps:  # tcpdump says "listening on" once its filter is in place
        assert dump.stderr is not None
        while "listening on" not in dump.stderr.readline():
            pass
    drops0, flows0 = totals.drops, totals.flows
    ticks0, t0 = _cpu_ticks(pid), time.monotonic()
    client = [connrate, "client", ",".join(servers), str(PORT)] if connrate else \
        [sys.executable, "-c", GENERATOR, ",".join(servers)]
    gens = [subprocess.Popen([*bed.exec_args(f"c{i}"), *client, str(rate / CLIENTS), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
            for i in range(CLIENTS)]
    outputs = [g.communicate()[0].split() for g in gens]
    wall = time.monotonic() - t0
    cpu = (_cpu_ticks(pid) - ticks0) / TICK / wall * 100
    rss = _rss_mb(pid)
    made = sum(int(o[0]) for o in outputs)
    deadline = time.monotonic() + INTERVAL + 5
    while totals.flows - flows0 < made and time.monotonic() < deadline:
        time.sleep(0.2)  # the collector reports at its next interval cut
    tcpdump_drops = 0
    for dump in dumps:
        dump.send_signal(signal.SIGINT)
        err = dump.communicate()[1]
        found = re.search(r"(\d+) packets dropped by kernel", err)
        tcpdump_drops += int(found.group(1)) if found else 0
    cpu_seconds = (_cpu_ticks(pid) - ticks0) / TICK  # including the store write of the step's flows
    return {"target": rate, "achieved": made / max(float(o[1]) for o in outputs), "made": made,
            "us_per_conn": cpu_seconds / made * 1e6 if made else 0.0,
            "flows": totals.flows - flows0, "drops": totals.drops - drops0,
            "tcpdump_drops": tcpdump_drops, "cpu": cpu, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        sys.exit(f"bench_collect: {reason}")
    bed = Bed().open()
    work = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    collector: subprocess.Popen[str] | None = None
    try:
        bed.bridge("bra", "10.199.1.1/24")
        pods = [(f"c{i}", f"10.199.1.{10 + i}") for i in range(CLIENTS)]
        pods += [(f"s{i}", f"10.199.1.{100 + i}") for i in range(SERVERS)]
        ifaces = [bed.pod(name, "bra", ip) for name, ip in pods]
        servers = [ip for name, ip in pods if name.startswith("s")]
        connrate = _connrate(work)
        print(f"generator: {'C (gcc)' if connrate else 'Python'}; {CLIENTS} clients, {SERVERS} servers, "
              f"{args.seconds:g} s per rate; tcpdump on each of the {len(ifaces)} pod interfaces")
        for name, _ in pods[CLIENTS:]:
            _serve(bed, name, connrate)
        (work / "cluster.yaml").write_text(yaml.safe_dump_all(_snapshot(pods)))
        collector = subprocess.Popen(
            [*bed.exec_args("host"), NETPOL, "collect", "--cluster", str(work / "cluster.yaml"),
             "--db", f"sqlite:///{work / 'store.db'}", "--interval", str(INTERVAL), "--log-format", "json"],
            stderr=subprocess.PIPE, text=True)
        assert collector.stderr is not None
        while True:
            entry = json.loads(collector.stderr.readline())
            if entry["msg"] == "interfaces changed" and len(entry["interfaces"]) == len(ifaces):
                break
        totals = _Totals(collector.stderr)
        pid = collector.pid  # `ip netns exec` execs the collector: same pid
        print(f"{'target/s':>9} {'achieved/s':>10} {'made':>7} {'flows':>7} {'drops':>6} {'tcpdump drops':>13} "
              f"{'CPU %core':>9} {'CPU us/conn':>11} {'RSS MB':>7}")
        for rate in (int(r) for r in args.rates.split(",")):
            r = _step(bed, rate, args.seconds, servers, totals, pid, ifaces, connrate)
            print(f"{r['target']:>9.0f} {r['achieved']:>10.0f} {r['made']:>7.0f} {r['flows']:>7.0f} "
                  f"{r['drops']:>6.0f} {r['tcpdump_drops']:>13.0f} {r['cpu']:>9.1f} {r['us_per_conn']:>11.1f} "
                  f"{r['rss']:>7.1f}", flush=True)
    finally:
        if collector is not None:
            collector.send_signal(signal.SIGTERM)
            collector.wait(timeout=60)
        bed.close()


if __name__ == "__main__":
    main()
