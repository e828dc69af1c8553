"""Benchmark ``netpol-gen check``: how much judging flows costs over merely reading them.

Each phase runs in a fresh interpreter so that its peak RSS (``ru_maxrss``) is its own:

* ``json``: Python's ``json.loads`` of every line of the flow file: the baseline of issue #15;
* ``parse``: ``iter_flows`` over the flow file into nothing - the floor any ``check`` pays;
* ``load``: ``load_cluster`` + ``load_policies`` + ``Evaluator`` construction;
* ``check``: load, then ``replay`` every flow (parsing included), as the library does it;
* ``cli``: ``netpol-gen check ... --format json > /dev/null`` as a user runs it (wall time);
* ``jsonl``: ``netpol-gen check ... --format jsonl > /dev/null``: one verdict per flow (wall time).

The goals: ``check / parse`` of about 2 or less, and ``check --format jsonl`` (wall, load and start-up
included) at most twice the ``json.loads`` baseline (issue #15), i.e. judging and writing a flow cost
no more than reading it, which is only possible because flows are grouped and judged per connection.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import gen_cluster

PHASES = ("json", "parse", "load", "check", "cli", "jsonl")


def _inputs(data: Path) -> tuple[list[str], list[str], str]:
    cluster = [str(p) for p in sorted(data.glob("cluster.*"))]
    return cluster, [str(data / "policies")], str(data / "flows.jsonl")


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time: steadier than wall time on a shared machine, where issue #15 compares it."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_phase(phase: str, data: Path, profile: bool) -> dict[str, Any]:
    """Run one phase in this process and return its figures (called in a fresh subprocess)."""
    from netpol_gen.evaluator import Evaluator, load_policies
    from netpol_gen.evaluator.stream import replay_stream
    from netpol_gen.model import iter_flows, load_cluster
    from netpol_gen.model.flows import open_flows

    clusters, policies, flows_path = _inputs(data)
    result: dict[str, Any] = {"phase": phase}
    if phase == "json":
        start, cpu = time.perf_counter(), _cpu_seconds()
        with open(flows_path, "rb") as stream:
            for line in stream:
                json.loads(line)
        result.update(seconds=time.perf_counter() - start, cpu_seconds=_cpu_seconds() - cpu, rss_mb=_rss_mb())
        return result
    if phase in ("cli", "jsonl"):
        start = time.perf_counter()
        cmd = [str(Path(sys.executable).with_name("netpol-gen")), "check", *(f"--cluster={c}" for c in clusters),
               *(f"--policies={p}" for p in policies), f"--flows={flows_path}", "--format",
               "json" if phase == "cli" else "jsonl"]
        with open("/dev/null", "w") as devnull:
            code = subprocess.run(cmd, stdout=devnull, check=False).returncode
        result.update(seconds=time.perf_counter() - start, exit_code=code, rss_mb=_rss_mb(resource.RUSAGE_CHILDREN),
                      cpu_seconds=_cpu_seconds(resource.RUSAGE_CHILDREN))
        return result
    if phase in ("load", "check"):
        start = time.perf_counter()
        evaluator = Evaluator(load_cluster(clusters), load_policies(policies))
        result["load_seconds"] = time.perf_counter() - start
    profiler = cProfile.Profile() if profile else None
    stream, name = open_flows(flows_path)
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    if phase == "parse":
        collections.deque(iter_flows(stream, name), maxlen=0)
    elif phase == "check":
        replayed = replay_stream(evaluator, stream, name)  # what check runs, without the output
        summary = replayed.summary
        result.update(flows=summary.flows, allowed=summary.allowed, denied=summary.denied,
                      connections=len(replayed.connections))
    if profiler is not None:
        profiler.disable()
    result["seconds"] = time.perf_counter() - start
    result["rss_mb"] = _rss_mb()
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return result


def _measure(phase: str, data: Path, profile: bool, repeat: int) -> dict[str, Any]:
    """The fastest of ``repeat`` fresh runs: on a shared machine the minimum is the least noisy."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--phase", phase, "--data", str(data),
                              *(["--profile"] if profile else [])], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"phase {phase} failed:\n{out.stderr}")
        sys.stderr.write(out.stderr)
        runs.append(json.loads(out.stdout))
    return min(runs, key=lambda run: run["seconds"])


def _report(data: Path, figures: dict[str, dict[str, Any]]) -> None:
    n = figures["check"]["flows"]
    baseline, parse, load, check, cli, jsonl = (figures[p] for p in PHASES)
    check_judge = check["seconds"]
    print(f"data: {data}  ({n:,} flows, {check['connections']:,} distinct connections, "
          f"{check['allowed']:,} allowed, {check['denied']:,} denied)")
    print(f"{'phase':<32}{'seconds':>9}{'flows/s':>12}{'peak RSS MB':>13}")
    print(f"{'json.loads per line (baseline)':<32}{baseline['seconds']:>9.2f}{n / baseline['seconds']:>12,.0f}"
          f"{baseline['rss_mb']:>13.0f}")
    print(f"{'parse (iter_flows)':<32}{parse['seconds']:>9.2f}{n / parse['seconds']:>12,.0f}{parse['rss_mb']:>13.0f}")
    print(f"{'load (snapshot+policies)':<32}{load['load_seconds']:>9.2f}{'':>12}{load['rss_mb']:>13.0f}")
    print(f"{'check (replay, lib)':<32}{check_judge:>9.2f}{n / check_judge:>12,.0f}{check['rss_mb']:>13.0f}")
    print(f"{'check CLI (wall, --format json)':<32}{cli['seconds']:>9.2f}{n / cli['seconds']:>12,.0f}"
          f"{cli['rss_mb']:>13.0f}   exit {cli['exit_code']}")
    print(f"{'check CLI (wall, --format jsonl)':<32}{jsonl['seconds']:>9.2f}{n / jsonl['seconds']:>12,.0f}"
          f"{jsonl['rss_mb']:>13.0f}   exit {jsonl['exit_code']}")
    print(f"ratio check/parse: {check_judge / parse['seconds']:.2f}  (goal <= ~2)")
    print(f"ratio check --format jsonl / json.loads: {jsonl['seconds'] / baseline['seconds']:.2f} wall, "
          f"{jsonl['cpu_seconds'] / baseline['cpu_seconds']:.2f} CPU ({jsonl['cpu_seconds']:.2f} / "
          f"{baseline['cpu_seconds']:.2f} s)  (goal <= 2)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gen_cluster.add_data_options(parser)
    parser.add_argument("--profile", action="store_true", help="cProfile the measured part of each phase")
    parser.add_argument("--repeat", type=int, default=1, help="run each phase N times, report the fastest")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data, args.profile)))
        return
    with gen_cluster.data_dir(args.data, args.flows, args.seed, args.preset) as data:
        _report(data, {phase: _measure(phase, data, args.profile, args.repeat) for phase in PHASES})


if __name__ == "__main__":
    main()
