"""Benchmark the pcap import against tcpdump on one file: ``bench_import_pcap.py FILE [--repeat N]``.

Each reader runs in a fresh process so that its peak RSS is its own. Printed side by side:
``read_capture`` with the tcpdump BPF pre-filter and without it (every packet in Python), plain
``tcpdump -nn -r FILE > /dev/null`` (the floor to beat) and ``tcpdump -r FILE -w /dev/null FILTER``
(the cost of the filter alone: issue #15's baseline). Rates are packets in the file per wall-clock
second; CPU is user+system seconds of that process (for ``read_capture``: the read's own, not the
interpreter's start, then the tcpdump it ran). ``--repeat N`` runs each row N times and keeps the
fastest (on a shared machine). The last lines are the ratios of the filtered import to the filter
alone, measured in this run: wall time, and Python's CPU time (issue #15's goal: 3 or less).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from netpol_gen.ingest.pcap import bpf_filter, open_packets, read_capture

_T = TypeVar("_T")


def _run_import(path: str, bpf: bool) -> None:
    """Child process: import the file, print timing, counts and peak RSS as JSON."""
    start, cpu = time.perf_counter(), time.process_time()
    result = read_capture(path, bpf=bpf)
    records = sum(1 for _ in result.records)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": elapsed, "records": records, "rss_kib": own.ru_maxrss,
                      "child_rss_kib": children.ru_maxrss, "cpu": cpu,
                      "child_cpu": children.ru_utime + children.ru_stime,
                      "stats": vars(result.stats) | {"bpf_filter": bool(result.stats.bpf_filter)}}))


def _count(path: str) -> tuple[int, int]:
    with open(path, "rb") as stream:
        reader = open_packets(stream, path)
        return sum(1 for _ in reader), reader.linktype or 0


def _timed(command: list[str]) -> tuple[float, float, int]:
    """Wall time, CPU time and peak RSS (KiB) of one command, its own (``wait4``), not over all children."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def _fastest(runs: int, measure: Callable[[], _T], seconds: Callable[[_T], float]) -> _T:
    return min((measure() for _ in range(runs)), key=seconds)


def _import(mode: str, path: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", __spec__.name, "--child", mode, path], capture_output=True,
                         text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _run_import(sys.argv[3], sys.argv[2] == "bpf")
        return
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import_pcap")
    parser.add_argument("file")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row; the fastest is kept")
    args = parser.parse_args()
    path = args.file
    packets, linktype = _count(path)
    print(f"{path}: {packets} packets, link type {linktype}; load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'reader':58} {'seconds':>8} {'CPU s':>12} {'pkt/s':>11} {'peak RSS':>10}")
    rows = []
    imports = {}
    for mode in ("bpf", "python"):
        run = imports[mode] = _fastest(args.repeat, lambda mode=mode: _import(mode, path), lambda r: r["cpu"])
        peak = f"{run['rss_kib'] // 1024} MiB"
        note = f" (+tcpdump {run['child_rss_kib'] // 1024} MiB)" if run["child_rss_kib"] else ""
        cpu = f"{run['cpu']:.2f}" + (f"+{run['child_cpu']:.2f}" if run["child_cpu"] else "")
        rows.append((f"read_capture bpf={mode == 'bpf'}{note}", run["seconds"], cpu, peak))
        stats = run["stats"]
        print(f"  [{mode}] flows={stats['flows']} dns_answers={stats['dns_answers']} "
              f"python_saw={stats['packets_filtered_in']} direction_unknown={stats['direction_unknown']}",
              file=sys.stderr)
    tcpdump = shutil.which("tcpdump")
    baseline = None
    if tcpdump is None:
        print("tcpdump is not installed: no tcpdump rows", file=sys.stderr)
    else:
        seconds, cpu_s, rss = _fastest(args.repeat, lambda: _timed([tcpdump, "-nn", "-r", path]), lambda r: r[1])
        rows.append(("tcpdump -nn -r FILE > /dev/null", seconds, f"{cpu_s:.2f}", f"{rss // 1024} MiB"))
        baseline = _fastest(args.repeat, lambda: _timed([tcpdump, "-r", path, "-w", "/dev/null", bpf_filter(linktype)]),
                            lambda r: r[1])
        seconds, cpu_s, rss = baseline
        rows.append(("tcpdump -r FILE -w /dev/null FILTER", seconds, f"{cpu_s:.2f}", f"{rss // 1024} MiB"))
    for name, seconds, cpu, peak in rows:
        print(f"{name:58} {seconds:8.2f} {cpu:>12} {packets / seconds:11,.0f} {peak:>10}")
    if baseline is not None:
        run = imports["bpf"]
        print(f"\nread_capture bpf=True / tcpdump FILTER, same run: wall {run['seconds'] / baseline[0]:.1f}x, "
              f"Python CPU {run['cpu'] / baseline[1]:.1f}x (with its tcpdump: "
              f"{(run['cpu'] + run['child_cpu']) / baseline[1]:.1f}x)")


if __name__ == "__main__":
    main()
