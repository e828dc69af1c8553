"""Store size per node-day with and without retention (``serve --retain``), on SQLite and PostgreSQL.

    .venv/bin/python -m bench.bench_retention [--nodes 20 --interval 300 --days 3 --retain 1d --backend both]

Simulates ``--nodes`` collectors each delivering a batch every ``--interval`` seconds of an injected
clock for ``--days`` days (each batch a few edges out of a settled cluster's fixed set, so the edges
stop growing on day one and what grows is per-batch), into two stores per backend: one never pruned,
one pruned every simulated hour with ``--retain``. Prints, per day, the size of both stores and their
``imports`` rows; then the bytes one delivered batch costs (the growth without retention) and that
cost per node-day at a 10 s interval, and the longest prune pass. Bounded: ~4 x 860 transactions, ~1 min.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid

import sqlalchemy as sa

from bench.bench_serve import Database, database
from netpol_gen.model.aggregate import Batch, EdgeTotals
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.store import schema as t
from netpol_gen.store.batches import Delivery, deliver_batches
from netpol_gen.store.db import open_store
from netpol_gen.store.retention import DAY, parse_duration, prune

START = 1_790_000_000.0 // DAY * DAY
HOUR = 3600.0


def _edges(count: int) -> list[tuple[Identity, Identity, int, str]]:
    pods = [Identity(IdentityKind.POD, f"ns{i % 5}", "Deployment", f"app{i}") for i in range(40)]
    rng = random.Random(7)
    return [(rng.choice(pods), rng.choice(pods), rng.choice((80, 443, 5432, 8080)), "TCP") for _ in range(count)]


def _rows(db: Database, table: sa.Table) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def run(name: str, args: argparse.Namespace) -> None:
    retain = parse_duration(args.retain)
    edges = _edges(200)
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as kept_dir, tempfile.TemporaryDirectory() as pruned_dir, \
            database(name, kept_dir) as kept_db, database(name, pruned_dir) as pruned_db:
        kept, pruned = open_store(kept_db.url), open_store(pruned_db.url)
        ticks_per_day = int(DAY // args.interval)
        longest = 0.0
        print(f"{name}: {args.nodes} nodes, a batch each every {args.interval:g} s, {args.days} days, "
              f"--retain {args.retain}")
        print("day  size kept   size pruned   imports kept   imports pruned")
        for day in range(args.days):
            for tick in range(ticks_per_day):
                at = START + day * DAY + tick * args.interval
                group = []
                for node in range(args.nodes):
                    batch = Batch({key: EdgeTotals(connections=1, first_seen=at - 5, last_seen=at)
                                   for key in rng.sample(edges, 3)})
                    group.append(Delivery(uuid.uuid4().hex, batch, 3, f"collect:node-{node}"))
                for store in (kept, pruned):
                    deliver_batches(store, group, now=at + 1)
                if (tick + 1) % int(HOUR // args.interval) == 0:
                    began = time.perf_counter()
                    prune(pruned, retain, at + 1)
                    longest = max(longest, time.perf_counter() - began)
            print(f"{day + 1:>3}  {kept_db.size_bytes() / 1e6:8.2f} MB  {pruned_db.size_bytes() / 1e6:9.2f} MB  "
                  f"{_rows(kept_db, t.imports):>13,}  {_rows(pruned_db, t.imports):>15,}")
        batches = args.nodes * ticks_per_day * args.days
        base = pruned_db.size_bytes()
        per_batch = (kept_db.size_bytes() - base) / (batches - _rows(pruned_db, t.imports))
        print(f"{name}: {per_batch:.0f} bytes per delivered batch kept (kept minus pruned store, per batch id "
              f"pruned); at a 10 s interval {per_batch * 8640 / 1e6:.2f} MB per node-day without retention, "
              f"bounded with it at ~{per_batch * 8640 * retain / DAY / 1e6:.1f} MB per node for --retain "
              f"{args.retain}; longest prune pass {longest * 1000:.0f} ms")
        kept.close()
        pruned.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=300.0, help="simulated seconds between a node's batches")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--retain", default="1d")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    for name in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run(name, args)


if __name__ == "__main__":
    main()
