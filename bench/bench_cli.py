"""Benchmark ``import``, ``export`` and start-up as a user runs them, against the same run's baseline.

Issue #15 measures what users feel: wall time of the real CLI, start-up and loading included. Each
figure is a fresh ``netpol-gen`` process (wall time; peak RSS of that process alone, ``ru_maxrss`` of
the child) and is printed with its ratio to Python's ``json.loads`` of every line of the same flow
file, run in the same invocation (the machine is shared: only same-run ratios compare across runs):

* ``json``: ``json.loads`` per line of ``flows.jsonl`` (the baseline, in a fresh interpreter);
* ``python`` and ``sqlalchemy``: ``python -c pass`` and ``python -c "import sqlalchemy"``, the floor of the
  two start-up rows below (every store command loads SQLAlchemy);
* ``help``: ``netpol-gen --help`` (goal < 0.3 s), with the slowest top-level imports of ``-X importtime``;
* ``import-tiny``: ``netpol-gen import`` of a tiny generated cluster (about 60 pods) and its 10 flows into a fresh
  SQLite store (goal < 0.3 s; each repeat into a new store), with its slowest imports too;
* ``import-one``: ``netpol-gen import`` of the first flow alone with the full snapshot (what loading it costs);
* ``import``: ``netpol-gen import`` of the whole flow file into a fresh SQLite store;
* ``export``: ``netpol-gen export`` of that store to ``/dev/null`` (YAML, verification included);
* ``audit2policy``: hubble-audit2policy (the issue's peer baseline; ``pip install -e '.[bench]'``) on the
  same flows as Hubble flow JSON (:mod:`bench.hubble_flows`, written before and not timed), policies to
  ``/dev/null`` (``--dry-run --no-enrich``), with our ratio: its time over ours for import + export
  (goal >= 3). Not installed: the row says so and nothing else changes.

Each row also has the process's CPU time (user + system), steadier than wall time on a shared machine.
Every process runs with its bytecode cached, as an installed package's is: ``PYTHONDONTWRITEBYTECODE``
is dropped from their environment and the package is compiled first (``compileall``, not timed), else
each start-up would include compiling every module it imports from source.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import gen_cluster
from bench.hubble_flows import write_hubble_flows

NETPOL_GEN = str(Path(sys.executable).with_name("netpol-gen"))
AUDIT2POLICY = str(Path(sys.executable).with_name("hubble-audit2policy"))
STARTUP_GOAL = 0.3  # seconds, issue #15
# the children's environment: bytecode written and read, as for an installed package (see the docstring)
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def compile_package() -> None:
    """The package's modules compiled to bytecode where the interpreter looks for it (the repository is
    the package in an editable install: its virtualenv is left out, pip compiled that)."""
    import netpol_gen

    root = Path(netpol_gen.__file__).parent
    compileall.compile_dir(root, quiet=1, rx=re.compile(r"[/\\]\.venv[/\\]|[/\\]tests[/\\]"))


def remove_store(path: Path) -> None:
    """A SQLite store gone with its WAL files (a stale -wal beside a new store would be replayed into it)."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        path.with_name(name).unlink(missing_ok=True)


def _run(cmd: list[str], repeat: int = 1, fresh: Path | None = None) -> dict[str, Any]:
    """The fastest of ``repeat`` runs of ``cmd`` (stdout discarded), each in a wrapper interpreter
    so that ``RUSAGE_CHILDREN`` is that run's peak RSS alone. ``fresh``: a SQLite store removed (with
    its WAL files) before each run, so that every run imports into a new store, not one that has the file."""
    wrapper = ("import json,resource,subprocess,sys,time\n"
               "t=time.perf_counter()\n"
               "c=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL).returncode\n"
               "u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(json.dumps({'seconds':time.perf_counter()-t,'exit_code':c,"
               "'cpu':u.ru_utime+u.ru_stime,'rss_mb':u.ru_maxrss/1024}))")
    runs = []
    for _ in range(repeat):
        if fresh is not None:
            remove_store(fresh)
        out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True,
                             env=ENV)
        runs.append(json.loads(out.stdout))
    return min(runs, key=lambda run: run["seconds"])


def _baseline(flows: Path) -> dict[str, Any]:
    code = ("import json,resource,sys,time\n"
            "t=time.perf_counter()\n"
            "n=sum(1 for line in open(sys.argv[1],'rb') if json.loads(line) is not None)\n"
            "u=resource.getrusage(resource.RUSAGE_SELF)\n"
            "print(json.dumps({'seconds':time.perf_counter()-t,'flows':n,'cpu':u.ru_utime+u.ru_stime,"
            "'rss_mb':u.ru_maxrss/1024}))")
    out = subprocess.run([sys.executable, "-c", code, str(flows)], capture_output=True, text=True, check=True, env=ENV)
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


def slowest_imports(count: int = 5, args: tuple[str, ...] = ("--help",)) -> list[tuple[int, str]]:
    """The top-level modules of ``netpol-gen ARGS`` with the most cumulative import time (us, name)."""
    code = ("import sys; sys.argv[0] = 'netpol-gen'\nfrom netpol_gen.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n")  # main() too: the CLI imports some modules late
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True, text=True,
                         check=False, stdin=subprocess.DEVNULL, env=ENV)
    top = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and not parts[2].startswith("  "):
            try:
                top.append((int(parts[1]), parts[2].strip()))
            except ValueError:
                continue  # the header line
    return sorted(top, reverse=True)[:count]


def tiny_import(work: Path) -> list[str]:
    """The arguments of ``netpol-gen import`` of the tiny cluster's flows into ``work``/tiny.db."""
    return ["import", "--db", f"sqlite:///{work / 'tiny.db'}", "--cluster", str(work / "tiny" / "cluster.yaml"),
            "--flows", str(work / "tiny" / "flows.jsonl")]


def measure(data: Path, work: Path, repeat: int) -> dict[str, dict[str, Any]]:
    flows, cluster = data / "flows.jsonl", str(data / "cluster.yaml")
    one = work / "one.jsonl"
    with flows.open("rb") as stream:
        one.write_bytes(stream.readline())
    gen_cluster.generate(work / "tiny", namespaces=6, pods=60, nodes=2, flows=10)
    compile_package()
    db = f"sqlite:///{work / 'learned.db'}"
    figures = {"json": _baseline(flows), "python": _run([sys.executable, "-c", "pass"], repeat),
               "sqlalchemy": _run([sys.executable, "-c", "import sqlalchemy"], repeat),
               "help": _run([NETPOL_GEN, "--help"], repeat)}
    figures["import-tiny"] = _run([NETPOL_GEN, *tiny_import(work)], repeat, fresh=work / "tiny.db")
    figures["import-one"] = _run([NETPOL_GEN, "import", "--db", f"sqlite:///{work / 'one.db'}", "--cluster", cluster,
                                  "--flows", str(one)])
    figures["import"] = _run([NETPOL_GEN, "import", "--db", db, "--cluster", cluster, "--flows", str(flows)])
    figures["export"] = _run([NETPOL_GEN, "export", "--db", db], repeat)
    if importlib.util.find_spec("hubble_audit2policy") is not None:
        hubble = work / "hubble.jsonl"
        write_hubble_flows(data, hubble)
        figures["audit2policy"] = _run([AUDIT2POLICY, str(hubble), "--no-enrich", "--dry-run"])
    return figures


def report(data: Path, figures: dict[str, dict[str, Any]], imports: dict[str, list[tuple[int, str]]]) -> None:
    base = figures["json"]["seconds"]
    print(f"data: {data}  ({figures['json']['flows']:,} flows)")
    print(f"{'what (fresh process, wall)':<34}{'seconds':>9}{'x json.loads':>14}{'CPU s':>8}{'peak RSS MB':>13}  exit")
    for name, label in (("json", "json.loads per line (baseline)"), ("python", "python -c pass (floor)"),
                        ("sqlalchemy", "python -c 'import sqlalchemy'"), ("help", "netpol-gen --help"),
                        ("import-tiny", "import, tiny cluster, 10 flows"),
                        ("import-one", "import, 1 flow, full snapshot"), ("import", "import --flows (SQLite)"),
                        ("export", "export > /dev/null"), ("audit2policy", "hubble-audit2policy (Hubble JSON)")):
        row = figures.get(name)
        if row is None:
            print(f"{label:<34}  not installed (pip install -e '.[bench]')")
            continue
        print(f"{label:<34}{row['seconds']:>9.2f}{row['seconds'] / base:>14.2f}{row['cpu']:>8.2f}"
              f"{row['rss_mb']:>13.0f}  {row.get('exit_code', '')}")
    print(f"start-up goal < {STARTUP_GOAL} s: --help {figures['help']['seconds']:.2f} s, "
          f"tiny import {figures['import-tiny']['seconds']:.2f} s (CPU {figures['import-tiny']['cpu']:.2f} s, of "
          f"which the interpreter {figures['python']['cpu']:.2f} s and SQLAlchemy's import "
          f"{figures['sqlalchemy']['cpu'] - figures['python']['cpu']:.2f} s)")
    ours = {key: figures["import"][key] + figures["export"][key] for key in ("seconds", "cpu")}
    print(f"import + export: {ours['seconds'] / base:.2f}x json.loads")
    if "audit2policy" in figures:
        peer = figures["audit2policy"]
        print(f"hubble-audit2policy / (import + export): {peer['seconds'] / ours['seconds']:.2f}x wall, "
              f"{peer['cpu'] / ours['cpu']:.2f}x CPU (goal >= 3)")
    for what, slowest in imports.items():
        print(f"slowest imports of {what} (-X importtime, cumulative): "
              + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in slowest))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gen_cluster.add_data_options(parser)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the start-up rows and of export; the fastest is shown")
    args = parser.parse_args(argv)
    with gen_cluster.data_dir(args.data, args.flows, args.seed, args.preset) as data:
        work = Path(tempfile.mkdtemp(prefix="netpol-bench-cli-"))
        try:
            figures = measure(data, work, args.repeat)
            remove_store(work / "tiny.db")
            imports = {"--help": slowest_imports(), "the tiny import": slowest_imports(args=tuple(tiny_import(work)))}
        finally:
            shutil.rmtree(work)
        report(data, figures, imports)


if __name__ == "__main__":
    main()
