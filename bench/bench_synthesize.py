"""Benchmark ``netpol-gen export``: synthesis, verification and rendering on a large learned store.

The store is built the way a user builds it: ``gen_cluster.py``'s cluster (about 3,000 pods) and flows
(1M) go through the real ``netpol-gen import`` into SQLite. Each phase then runs in a fresh interpreter
so that its peak RSS (``ru_maxrss``) is its own:

* ``load``: ``load_learned`` (the store read into the synthesizer's input);
* ``synthesize``: load, then ``synthesize`` (selectors, rules, and verification of every observed edge
  for every pod pair by the evaluator), timed alone, with the verification's figures;
* ``render``: load and synthesize, then ``render_yaml`` of the whole set, timed alone;
* ``cli``: ``netpol-gen export > /dev/null`` as a user runs it (wall time, startup included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import gen_cluster

PHASES = ("load", "synthesize", "render", "cli")
NETPOL_GEN = str(Path(sys.executable).with_name("netpol-gen"))


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def _db(data: Path) -> str:
    return f"sqlite:///{data / 'learned.db'}"


def build_store(data: Path) -> dict[str, Any]:
    """Import the generated snapshot and flows into ``data/learned.db`` (once) with the real CLI."""
    if (data / "learned.db").exists():
        return {}
    start = time.perf_counter()
    subprocess.run([NETPOL_GEN, "import", "--db", _db(data), "--cluster", str(data / "cluster.yaml"),
                    "--flows", str(data / "flows.jsonl")], check=True, stdout=subprocess.DEVNULL)
    return {"seconds": time.perf_counter() - start, "rss_mb": _rss_mb(resource.RUSAGE_CHILDREN)}


def run_phase(phase: str, data: Path) -> dict[str, Any]:
    """Run one phase in this process and return its figures (called in a fresh subprocess)."""
    from netpol_gen.store.db import open_store
    from netpol_gen.store.learned import load_learned
    from netpol_gen.synthesizer import render_yaml, synthesize

    result: dict[str, Any] = {"phase": phase}
    if phase == "cli":
        start = time.perf_counter()
        with open("/dev/null", "w") as devnull:
            code = subprocess.run([NETPOL_GEN, "export", "--db", _db(data)], stdout=devnull, check=False).returncode
        result.update(seconds=time.perf_counter() - start, exit_code=code, rss_mb=_rss_mb(resource.RUSAGE_CHILDREN))
        return result
    store = open_store(_db(data), create=False)
    start = time.perf_counter()
    inputs = load_learned(store)
    store.close()
    result.update(seconds=time.perf_counter() - start, edges=len(inputs.edges), workloads=len(inputs.workloads),
                  pods=sum(len(w.pods) for w in inputs.workloads))
    if phase in ("synthesize", "render"):
        start = time.perf_counter()
        synthesis = synthesize(inputs)
        report = synthesis.report
        result.update(seconds=time.perf_counter() - start, ok=synthesis.ok, policies=report.policies,
                      rules=report.rules, peers=report.peers, yaml_lines=report.yaml_lines,
                      judged=report.verification.judged, evaluated=report.verification.evaluated,
                      own_node=len(report.own_node))
    if phase == "render":
        start = time.perf_counter()
        text = render_yaml(synthesis.policies)
        result.update(seconds=time.perf_counter() - start, bytes=len(text))
    result["rss_mb"] = _rss_mb()
    return result


def _measure(phase: str, data: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", __spec__.name, "--phase", phase, "--data", str(data)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"phase {phase} failed:\n{out.stderr}")
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


def _report(data: Path, built: dict[str, Any], figures: dict[str, dict[str, Any]]) -> None:
    load, synth, render, cli = (figures[p] for p in PHASES)
    print(f"store: {data / 'learned.db'}  ({load['workloads']:,} workloads, {load['pods']:,} pods, "
          f"{load['edges']:,} edges)")
    if built:
        print(f"import (CLI, 1 run): {built['seconds']:.1f} s, peak RSS {built['rss_mb']:.0f} MB")
    print(f"{'phase':<34}{'seconds':>9}{'peak RSS MB':>13}")
    print(f"{'load_learned':<34}{load['seconds']:>9.2f}{load['rss_mb']:>13.0f}")
    print(f"{'synthesize (+ verification)':<34}{synth['seconds']:>9.2f}{synth['rss_mb']:>13.0f}")
    print(f"{'render_yaml':<34}{render['seconds']:>9.2f}{render['rss_mb']:>13.0f}")
    print(f"{'export CLI (wall)':<34}{cli['seconds']:>9.2f}{cli['rss_mb']:>13.0f}   exit {cli['exit_code']}")
    print(f"output: {synth['policies']:,} policies, {synth['rules']:,} rules, {synth['peers']:,} peers, "
          f"{synth['yaml_lines']:,} YAML lines ({render['bytes']:,} bytes); verified {synth['judged']:,} "
          f"pod-pair connections with {synth['evaluated']:,} judgements; ok={synth['ok']}; "
          f"{synth['own_node']} node edges left to the own-node rule")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory from gen_cluster.py (default: generate one); the "
                                                  "store is imported into DATA/learned.db once")
    parser.add_argument("--flows", type=int, default=1_000_000, help="flows to generate (without --data)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data)))
        return
    with gen_cluster.data_dir(args.data, args.flows, args.seed) as data:
        built = build_store(data)
        _report(data, built, {phase: _measure(phase, data) for phase in PHASES})


if __name__ == "__main__":
    main()
