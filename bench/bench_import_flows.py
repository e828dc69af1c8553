"""Benchmark ``netpol-gen import --flows`` into SQLite and PostgreSQL: ``bench_import_flows.py [--data DIR]``.

Each phase runs in a fresh interpreter so that its peak RSS (``ru_maxrss``) is its own:

* ``parse``: ``iter_flows`` over the flow file into nothing - the floor any import pays;
* ``import-sqlite`` / ``import-postgresql``: ``import_sources`` (what the CLI runs) into an empty store:
  snapshot load, read, attribute, dedupe, aggregate in memory, one write transaction;
* ``keys-sqlite`` / ``keys-postgresql``: the store write alone, for ``--keys`` unique edge keys: pre-aggregated
  and written with ``write_batch`` in one transaction, against one upsert statement per event (also in one
  transaction) - the difference pre-aggregation makes.

The last line is the ratio of the two imports (issue #16: PostgreSQL no slower than 1.1x SQLite).
PostgreSQL phases get a fresh schema in ``--pg`` (dropped afterwards); they are skipped, with the reason,
when no server answers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import gen_flows

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PHASES = ("parse", "import-sqlite", "import-postgresql", "keys-sqlite", "keys-postgresql")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _phase_parse(data: Path, _url: str, _keys: int) -> dict[str, Any]:
    from netpol_gen.model import iter_flows

    start = time.perf_counter()
    with (data / "flows.jsonl").open("rb") as stream:
        flows = sum(1 for _ in iter_flows(stream, "flows.jsonl"))
    return {"seconds": time.perf_counter() - start, "flows": flows}


def _phase_import(data: Path, url: str, _keys: int) -> dict[str, Any]:
    from netpol_gen.ingest.importer import import_sources
    from netpol_gen.ingest.sources import Source
    from netpol_gen.model import load_cluster
    from netpol_gen.store.db import open_store

    start = time.perf_counter()
    store = open_store(url)
    report = import_sources(store, load_cluster([str(data / "cluster.yaml")], require_pods=True),
                            [Source(str(data / "flows.jsonl"), "flows")])
    store.close()
    return {"seconds": time.perf_counter() - start, "flows": report.flows, "duplicates": report.duplicates,
            "edges": report.edges_new}


def _phase_keys(_data: Path, url: str, keys: int) -> dict[str, Any]:
    """Write ``keys`` unique edges pre-aggregated, then the same as one upsert per event, timing each."""
    from netpol_gen.model.aggregate import Batch, EdgeTotals
    from netpol_gen.model.identity import Identity, IdentityKind
    from netpol_gen.store import schema as t
    from netpol_gen.store.db import open_store
    from netpol_gen.store.upsert import upsert_statement
    from netpol_gen.store.writer import identity_ids, write_batch

    sources = [Identity.of_address(IdentityKind.EXTERNAL, f"198.18.{i // 256}.{i % 256}") for i in range(1000)]
    dests = [Identity(IdentityKind.POD, "bench", "Deployment", f"app-{i}") for i in range(max(1, keys // 1000))]
    batch = Batch()
    for n in range(keys):
        batch.edges[(sources[n % 1000], dests[n // 1000], 8080, "TCP")] = EdgeTotals(
            connections=1, packets=10, bytes=1000, first_seen=1.0e9 + n, last_seen=1.0e9 + n)
    store = open_store(url)
    start = time.perf_counter()
    with store.transaction() as conn:
        write_batch(conn, batch)
    batched = time.perf_counter() - start
    e = t.edges.c
    with store.transaction() as conn:  # the per-event baseline, on a fresh table
        conn.execute(sa.delete(t.edges))
        ids = identity_ids(conn, [*sources, *dests])
        statement = upsert_statement(conn, t.edges, ["src_id", "dst_id", "dst_port", "protocol"],
                                     lambda ex: {"connections": e.connections + ex.connections})
        start = time.perf_counter()
        for (src, dst, port, protocol), totals in batch.edges.items():  # one statement per event
            conn.execute(statement, {"src_id": ids[src], "dst_id": ids[dst], "dst_port": port, "protocol": protocol,
                                     "connections": 1, "packets": totals.packets, "bytes": totals.bytes,
                                     "first_seen": totals.first_seen, "last_seen": totals.last_seen})
        per_event = time.perf_counter() - start
    store.close()
    return {"keys": keys, "batched_seconds": batched, "per_event_seconds": per_event}


_RUN = {"parse": _phase_parse, "import": _phase_import, "keys": _phase_keys}


def _measure(phase: str, data: Path, url: str, keys: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", __spec__.name, "--phase", phase, "--data", str(data), "--url", url,
                          "--keys", str(keys)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"phase {phase} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def _pg_schema(base: str) -> tuple[sa.Engine, str] | str:
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    schema = f"netpol_bench_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        return str(exc.orig).splitlines()[0]
    return engine, schema


def _run_engine(engine_name: str, data: Path, tmp: Path, pg: str, keys: int) -> dict[str, dict[str, Any]]:
    """The import and keys phases on one engine, each into its own empty store."""
    figures = {}
    for kind in ("import", "keys"):
        if engine_name == "sqlite":
            figures[kind] = _measure(kind, data, f"sqlite:///{tmp / f'{kind}.db'}", keys)
            continue
        made = _pg_schema(pg)
        if isinstance(made, str):
            print(f"postgresql skipped: {made}", file=sys.stderr)
            return {}
        engine, schema = made
        try:
            figures[kind] = _measure(kind, data, f"{pg}?options=-csearch_path%3D{schema}", keys)
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory from gen_flows.py (default: generate one)")
    parser.add_argument("--flows", type=int, default=1_000_000, help="connections to generate (without --data)")
    parser.add_argument("--keys", type=int, default=200_000, help="unique edge keys for the write-only phases")
    parser.add_argument("--pg", default=PG_URL, help="PostgreSQL server URL (a schema is created in it)")
    parser.add_argument("--phase", choices=tuple(_RUN), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        figures = _RUN[args.phase](args.data, args.url, args.keys)
        print(json.dumps(figures | {"rss_mb": _rss_mb()}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="netpol-bench-import-"))
    try:
        data = args.data
        if data is None:
            data = tmp / "data"
            gen_flows.main([str(data), "--flows", str(args.flows)])
        parse = _measure("parse", data, "", args.keys)
        lines = parse["flows"]
        print(f"data: {data} ({lines:,} flow lines)")
        print(f"{'phase':<34}{'seconds':>9}{'rate':>18}{'peak RSS MB':>13}")
        print(f"{'parse (iter_flows, the floor)':<34}{parse['seconds']:>9.2f}{lines / parse['seconds']:>12,.0f} fl/s"
              f"{parse['rss_mb']:>13.0f}")
        imports = {}
        for engine_name in ("sqlite", "postgresql"):
            figures = _run_engine(engine_name, data, tmp, args.pg, args.keys)
            if not figures:
                continue
            imp, keys = figures["import"], figures["keys"]
            imports[engine_name] = imp
            print(f"{'import into ' + engine_name:<34}{imp['seconds']:>9.2f}{lines / imp['seconds']:>12,.0f} fl/s"
                  f"{imp['rss_mb']:>13.0f}   ({imp['duplicates']:,} duplicates, {imp['edges']:,} edges)")
            print(f"{'  write ' + str(keys['keys']) + ' keys, pre-aggregated':<34}{keys['batched_seconds']:>9.2f}"
                  f"{keys['keys'] / keys['batched_seconds']:>10,.0f} keys/s{keys['rss_mb']:>13.0f}")
            print(f"{'  write ' + str(keys['keys']) + ' keys, upsert per event':<34}"
                  f"{keys['per_event_seconds']:>9.2f}{keys['keys'] / keys['per_event_seconds']:>10,.0f} keys/s")
        if len(imports) == 2:  # issue #16's goal: no slower than 1.1x
            print(f"import postgresql / sqlite: {imports['postgresql']['seconds'] / imports['sqlite']['seconds']:.2f}x"
                  f"  (each: import / parse {imports['sqlite']['seconds'] / parse['seconds']:.2f}x sqlite, "
                  f"{imports['postgresql']['seconds'] / parse['seconds']:.2f}x postgresql)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
