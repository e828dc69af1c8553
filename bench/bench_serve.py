"""Benchmark ``netpol-gen serve``: ingest throughput with concurrent collectors, the server's peak RSS,
and how the client's retries ride out a server outage.

    .venv/bin/python -m bench.bench_serve [--clients 20] [--batches 50] [--edges 200] [--outage 6]

The server runs as its own process (``netpol-gen serve``) so its RSS is its own. Each client posts
``--batches`` gzip batches of ``--edges`` edges drawn from a shared pool (so collectors update the
same rows, as nodes do), each batch posted twice (the retry after a lost answer) to count the
duplicate check as well. PostgreSQL at $NETPOL_GEN_TEST_PG (a fresh schema) when it answers.

The outage scenario stops the server for ``--outage`` seconds (the issue's minute, scaled down so
the run stays short; the backoff cap makes it the same shape) while one client keeps posting with a
retry deadline longer than the outage, then reports retries, the longest wait and the delay between
the restart and the first delivery.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from netpol_gen.model.aggregate import Batch, EdgeTotals
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.service.client import Retry, ServerError, StoreClient
from netpol_gen.service.wire import BatchMessage

TOKEN = "bench-token"
PG = os.environ.get("NETPOL_GEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, db: str, token_file: str, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        exe = str(Path(sys.executable).parent / "netpol-gen")
        self.process = subprocess.Popen([exe, "serve", "--db", db, "--listen", f"127.0.0.1:{port}", "--token-file",
                                         token_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.05)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)


def _pool(size: int) -> list[tuple[Identity, Identity, int]]:
    pods = [Identity(IdentityKind.POD, f"ns{i % 20}", "Deployment", f"app{i}") for i in range(size // 10)]
    rng = random.Random(7)
    return [(rng.choice(pods), rng.choice(pods), rng.choice((80, 443, 5432, 6379, 8080))) for _ in range(size)]


def _batch(pool: list[tuple[Identity, Identity, int]], edges: int, rng: random.Random) -> Batch:
    batch = Batch()
    now = time.time()
    for src, dst, port in rng.sample(pool, edges):
        batch.edges[(src, dst, port, "TCP")] = EdgeTotals(rng.randint(1, 50), 10, 1000, now - 5, now)
    return batch


def throughput(url: str, clients: int, batches: int, edges: int) -> tuple[float, float]:
    pool = _pool(max(edges * 10, 2000))
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with StoreClient(url, TOKEN, retry=Retry(deadline=60)) as client:
                for _ in range(batches):
                    message = BatchMessage(uuid.uuid4().hex, _batch(pool, edges, rng), flows=edges)
                    client.post(message)
                    client.post(message)  # the retry after a lost answer: recognised, not counted
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"client failed: {errors[0]}")
    total = clients * batches
    return total / elapsed, total * edges / elapsed


def outage(db: str, token_file: str, seconds: float) -> None:
    port = _free_port()
    server = Server(db, token_file, port)
    client = StoreClient(server.url, TOKEN, retry=Retry(deadline=seconds + 30, base=0.2, cap=5.0), timeout=2.0)
    waits: list[float] = []
    sleep = client._sleep

    def recorded(delay: float) -> None:
        waits.append(delay)
        sleep(delay)
    client._sleep = recorded
    rng, pool = random.Random(1), _pool(2000)
    client.post(BatchMessage("before", _batch(pool, 100, rng)))
    server.stop()
    down = time.monotonic()
    result: dict[str, float] = {}

    def post_during_outage() -> None:
        try:
            client.post(BatchMessage("during", _batch(pool, 100, rng)))
            result["delivered"] = time.monotonic()
        except ServerError as exc:
            print(f"  outage: gave up: {exc}")

    thread = threading.Thread(target=post_during_outage)
    thread.start()
    time.sleep(seconds)  # the outage being simulated, not synchronisation
    server = Server(db, token_file, port)
    restarted = time.monotonic()
    thread.join()
    server.stop()
    client.close()
    if "delivered" in result:
        print(f"  outage {restarted - down:.1f} s: delivered {result['delivered'] - restarted:.2f} s after the "
              f"restart; {len(waits)} retries, longest wait {max(waits):.2f} s, total waited {sum(waits):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--edges", type=int, default=200)
    parser.add_argument("--outage", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp, "token")
        token_file.write_text(TOKEN)
        backends = {"sqlite": f"sqlite:///{tmp}/bench.db"}
        engine = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
        schema = f"netpol_bench_{uuid.uuid4().hex[:8]}"
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            backends["postgresql"] = f"{PG}?options=-csearch_path%3D{schema}"
        except sa.exc.OperationalError:
            print(f"PostgreSQL at {PG} does not answer: SQLite only")
        try:
            for name, db in reversed(backends.items()):
                server = Server(db, str(token_file), _free_port())
                batches_s, edges_s = throughput(server.url, args.clients, args.batches, args.edges)
                print(f"{name}: {args.clients} clients x {args.batches} batches x {args.edges} edges (each batch "
                      f"posted twice): {batches_s:.0f} batches/s, {edges_s:.0f} edges/s, server peak RSS "
                      f"{server.peak_rss_mb():.0f} MiB")
                server.stop()
                outage(db, str(token_file), args.outage)
        finally:
            if "postgresql" in backends:
                with engine.connect() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


if __name__ == "__main__":
    main()
