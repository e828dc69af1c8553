"""Benchmark the pcap import against tcpdump on one file: ``bench_import_pcap.py FILE``.

Each reader runs in a fresh process so that its peak RSS is its own. Printed side by side:
``read_capture`` with the tcpdump BPF pre-filter and without it (every packet in Python), plain
``tcpdump -nn -r FILE > /dev/null`` (the floor to beat) and ``tcpdump -r FILE -w /dev/null FILTER``
(the cost of the filter alone, the ceiling). Rates are packets in the file per wall-clock second.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

from netpol_gen.ingest.pcap import bpf_filter, open_packets, read_capture


def _run_import(path: str, bpf: bool) -> None:
    """Child process: import the file, print timing, counts and peak RSS as JSON."""
    start = time.perf_counter()
    result = read_capture(path, bpf=bpf)
    records = sum(1 for _ in result.records)
    elapsed = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": elapsed, "records": records, "rss_kib": own, "child_rss_kib": children,
                      "stats": vars(result.stats) | {"bpf_filter": bool(result.stats.bpf_filter)}}))


def _count(path: str) -> tuple[int, int]:
    with open(path, "rb") as stream:
        reader = open_packets(stream, path)
        return sum(1 for _ in reader), reader.linktype or 0


def _timed(command: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command, its own (``wait4``), not the max over all children."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    return elapsed, usage.ru_maxrss


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _run_import(sys.argv[3], sys.argv[2] == "bpf")
        return
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.bench_import_pcap FILE")
    path = sys.argv[1]
    packets, linktype = _count(path)
    print(f"{path}: {packets} packets, link type {linktype}\n")
    print(f"{'reader':58} {'seconds':>8} {'pkt/s':>11} {'peak RSS':>10}")
    rows = []
    for mode in ("bpf", "python"):
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--child", mode, path], capture_output=True,
                             text=True, check=True).stdout
        run = json.loads(out)
        peak = f"{run['rss_kib'] // 1024} MiB"
        note = f" (+tcpdump {run['child_rss_kib'] // 1024} MiB)" if run["child_rss_kib"] else ""
        rows.append((f"read_capture bpf={mode == 'bpf'}{note}", run["seconds"], peak))
        stats = run["stats"]
        print(f"  [{mode}] flows={stats['flows']} dns_answers={stats['dns_answers']} "
              f"python_saw={stats['packets_filtered_in']} direction_unknown={stats['direction_unknown']}",
              file=sys.stderr)
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        print("tcpdump is not installed: no tcpdump rows", file=sys.stderr)
    else:
        seconds, rss = _timed([tcpdump, "-nn", "-r", path])
        rows.append(("tcpdump -nn -r FILE > /dev/null", seconds, f"{rss // 1024} MiB"))
        seconds, rss = _timed([tcpdump, "-r", path, "-w", "/dev/null", bpf_filter(linktype)])
        rows.append(("tcpdump -r FILE -w /dev/null FILTER", seconds, f"{rss // 1024} MiB"))
    for name, seconds, peak in rows:
        print(f"{name:58} {seconds:8.2f} {packets / seconds:11,.0f} {peak:>10}")


if __name__ == "__main__":
    main()
