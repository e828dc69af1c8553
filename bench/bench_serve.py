"""Load simulator for ``netpol-gen serve``: a cluster of ``--nodes`` collectors, each posting one batch
every ``--interval`` seconds, for ``--minutes``; then a thundering herd (every node's spool at once).

    .venv/bin/python -m bench.bench_serve --nodes 1000 --interval 10 --minutes 5 [--backend sqlite|postgresql|both]
        [--replicas 2] [--edges 200] [--spool 6] [--workers 64] [--max-lag 10]

Batches are drawn from a cluster-shaped graph, not from a uniform pool: workloads (replicas spread
over nodes) call a few popular Services and some private peers, nodes probe their own pods, a few
external addresses are reached from everywhere. A node's batch holds edges of the pods on that node,
so the nodes running replicas of the same workload post the same edges (the overlap that makes
writers contend for the same rows). 5% of the batches are posted twice (the retry after a lost
answer), which the store must recognise.

The steady phase is open-loop: each node posts at its own phase within the interval whatever the
server's latency, so a store that cannot keep up shows a growing lag, not a politely slower client.
A store slower than the offered load falls behind without bound; once a post leaves more than
``--max-lag`` seconds after its due time the steady phase stops scheduling (reported as falling
behind), drains what is queued, and its figure is the rate the store sustained while saturated. That,
and counts, bound every run: the defaults finish in about a minute per backend.

Every phase's posts are made and gzipped before it starts (about 7 KB each: 210 MB for a 5-minute
steady phase), so the generator's CPU during a phase is posting only.

The herd phase is the store restart: every node delivers ``--spool`` batches at once, as many in
flight as ``--workers``. On a 5xx the client waits (Retry-After) and retries the same batch id.

Reported: batches/s and edges/s sustained (posted / wall time of the phase), p50/p99 latency, the
largest lag behind schedule, 5xx answers, peak RSS of each serve process, CPU seconds of the serve
processes, the database backends and this load generator (which one is the bottleneck), database
size (and per node-day of learning), and exactly-once: the connections and batches posted must equal
what the store holds, read back through ``GET /v1/edges`` and ``/v1/deliveries``.

Everything on loopback; PostgreSQL at $NETPOL_GEN_TEST_PG in a fresh schema (dropped at the end).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from netpol_gen.model.aggregate import Batch, EdgeKey, EdgeTotals, Sample
from netpol_gen.model.identity import Identity, IdentityKind
from netpol_gen.service.client import pooled
from netpol_gen.service.wire import BatchMessage, encode

TOKEN = "bench-token"
PG = os.environ.get("NETPOL_GEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
APP_NAME = "netpol-bench"
PORTS = (80, 443, 5432, 6379, 8080, 9090, 53)


# --- the cluster-shaped graph ----------------------------------------------------------------------


@dataclass
class Graph:
    """Per node, the edges its collector sees (with a JSON fragment each, encoded once)."""

    node_edges: list[list[int]]
    fragments: list[str]  # [key, totals] as the wire encodes one edge
    connections: list[int]  # per edge, what one sighting in a batch adds

    @property
    def edges(self) -> int:
        return len(self.fragments)


def build_graph(nodes: int, seed: int = 7) -> Graph:
    """About 30 pods per node, 10 replicas per workload, 5 workloads per namespace."""
    rng = random.Random(seed)
    workloads = max(nodes * 3, 20)
    wl = [Identity(IdentityKind.POD, f"ns{w // 5}", "Deployment", f"app{w}") for w in range(workloads)]
    popular = rng.sample(range(workloads), max(workloads // 50, 3))  # databases, caches, APIs everyone calls
    externals = [Identity(IdentityKind.EXTERNAL, ip=f"203.0.113.{i}") for i in range(50)]
    calls: dict[int, list[tuple[Identity, int]]] = {}
    for w in range(workloads):
        peers = [wl[p] for p in rng.sample(popular, 2)] + [wl[rng.randrange(workloads)] for _ in range(3)]
        calls[w] = [(peer, rng.choice(PORTS)) for peer in peers] + [(rng.choice(externals), 443)]
    placement: list[list[int]] = [[] for _ in range(nodes)]
    for w in range(workloads):
        for node in rng.sample(range(nodes), min(10, nodes)):
            placement[node].append(w)
    index: dict[EdgeKey, int] = {}
    keys: list[EdgeKey] = []

    def edge(key: EdgeKey) -> int:
        if key not in index:
            index[key] = len(keys)
            keys.append(key)
        return index[key]

    node_edges = []
    for node, hosted in enumerate(placement):
        node_id = Identity(IdentityKind.NODE, node=f"node{node}")
        mine = {edge((wl[w], peer, port, "TCP")) for w in hosted for peer, port in calls[w]}
        mine |= {edge((node_id, wl[w], 8080, "TCP")) for w in hosted}  # kubelet probes
        node_edges.append(sorted(mine))
    now = time.time()
    fragments, connections = [], []
    for n, key in enumerate(keys):
        conns = 1 + n % 17
        sample = Sample(now, f"10.{n % 250}.0.1", 40000 + n % 20000, f"10.{n % 250}.1.1", key[2], None, None,
                        None, 10, 1000)
        totals = EdgeTotals(conns, 10 * conns, 1000 * conns, now - 10, now, samples=[sample])
        pair = encode(Batch(edges={key: totals}))["edges"][0]
        fragments.append(json.dumps(pair, separators=(",", ":")))
        connections.append(conns)
    return Graph(node_edges, fragments, connections)


@dataclass(frozen=True)
class Post:
    batch_id: str
    body: bytes  # gzip
    connections: int
    due: float  # seconds after the start of its phase it is scheduled for


class BatchMaker:
    """Batches as a node would cut them: ``edges`` of its edges (all, if it has fewer)."""

    def __init__(self, graph: Graph, edges: int, seed: int) -> None:
        self.graph, self.edges, self.rng = graph, edges, random.Random(seed)
        self.head, self.tail = self._template()

    @staticmethod
    def _template() -> tuple[str, str]:
        text = json.dumps(encode(BatchMessage("@ID@", Batch(), flows=0, source="@SRC@")), separators=(",", ":"))
        head, found, tail = text.partition('"edges":[]')  # an empty batch's edges, as BatchBody sends them
        if not found:
            raise SystemExit(f"bench_serve: the wire format changed, no empty edges in {text}")
        return head + '"edges":[', "]" + tail

    def make(self, node: int, due: float) -> Post:
        mine = self.graph.node_edges[node]
        chosen = self.rng.sample(mine, min(self.edges, len(mine)))
        batch_id = uuid.uuid4().hex
        text = (self.head.replace("@ID@", batch_id).replace("@SRC@", f"node{node}")
                + ",".join(self.graph.fragments[e] for e in chosen) + self.tail)
        return Post(batch_id, gzip.compress(text.encode(), compresslevel=1),
                    sum(self.graph.connections[e] for e in chosen), due)


# --- processes and measurements -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


class Server:
    """One ``netpol-gen serve`` process (its own RSS and CPU)."""

    def __init__(self, db: str, token_file: str, extra: list[str]) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        exe = str(Path(sys.executable).parent / "netpol-gen")
        self.process = subprocess.Popen([exe, "serve", "--db", db, "--listen", f"127.0.0.1:{port}", "--token-file",
                                         token_file, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.05)  # polling a starting process, not synchronising a test

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


@dataclass
class Database:
    """The store under test: its URL for serve, and how to measure it."""

    name: str
    url: str
    engine: sa.Engine
    path: Path | None = None  # SQLite file

    def size_bytes(self) -> int:
        if self.path is not None:
            return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                "AND c.relkind IN ('r', 'm')")).scalar_one())

    def backends(self) -> list[int]:
        """PIDs of the PostgreSQL backends serving this run (none for SQLite: it is in-process)."""
        if self.path is not None:
            return []
        with self.engine.connect() as conn:
            return [int(pid) for pid in conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :name AND pid <> pg_backend_pid()"),
                {"name": APP_NAME}).scalars()]


@contextmanager
def database(name: str, tmp: str) -> Iterator[Database]:
    if name == "sqlite":
        path = Path(tmp, "bench.db")
        url = f"sqlite:///{path}"
        engine = sa.create_engine(url)
        try:
            yield Database(name, url, engine, path)
        finally:
            engine.dispose()
        return
    schema = f"netpol_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG}?options=-csearch_path%3D{schema}&application_name={APP_NAME}"
    engine = sa.create_engine(f"{PG}?options=-csearch_path%3D{schema}")
    try:
        yield Database(name, url, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase delivered and how long it took."""

    name: str
    latencies: list[float] = field(default_factory=list)
    lag_max: float = 0.0
    fell_behind: float | None = None  # seconds into the phase when the lag passed --max-lag
    server_errors: int = 0
    transport_retries: list[str] = field(default_factory=list)  # connection errors, retried as a collector does
    other_errors: list[str] = field(default_factory=list)
    posted: int = 0  # batch ids acknowledged as written
    duplicates_refused: int = 0  # second posts acknowledged as already written
    connections: int = 0
    edges: int = 0
    started: float = 0.0
    ended: float = 0.0

    def report(self) -> str:
        elapsed = self.ended - self.started
        lat = sorted(self.latencies) or [float("nan")]
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        behind = ("" if self.fell_behind is None else
                  f"; FELL BEHIND the offered load after {self.fell_behind:.0f} s (scheduling stopped)")
        errors = f", other errors {len(self.other_errors)} ({self.other_errors[0]})" if self.other_errors else ""
        retried = (f", connection errors retried {len(self.transport_retries)} ({self.transport_retries[0]})"
                   if self.transport_retries else "")
        return (f"  {self.name}: {self.posted} batches in {elapsed:.1f} s = {self.posted / elapsed:.1f} batches/s, "
                f"{self.edges / elapsed:.0f} edges/s; latency p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; "
                f"lag behind schedule max {self.lag_max:.2f} s; 5xx {self.server_errors}{retried}{errors}{behind}")


class Poster:
    """Worker threads posting from a queue; each keeps one HTTP connection (a collector's)."""

    def __init__(self, urls: list[str], workers: int, edges_per_batch: int) -> None:
        self.jobs: queue.Queue[Post | None] = queue.Queue()
        self.urls, self.edges_per_batch = urls, edges_per_batch
        self.lock = threading.Lock()
        self.phase = Phase("idle")
        self.dup_rng = random.Random(3)
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(workers)]
        for thread in self.threads:
            thread.start()

    def _send(self, client: httpx.Client, post: Post) -> bool | None:
        """Posts until answered (5xx and connection errors are retried as the collector does, and counted:
        the exactly-once check then shows that a retried batch was neither lost nor counted twice)."""
        for _ in range(50):
            try:
                response = client.post("/v1/batches", content=post.body)
            except httpx.TransportError as exc:
                with self.lock:
                    self.phase.transport_retries.append(type(exc).__name__)
                time.sleep(0.2)  # a collector's backoff
                continue
            if response.status_code >= 500:
                with self.lock:
                    self.phase.server_errors += 1
                time.sleep(float(response.headers.get("retry-after", "1")))  # as the collector obeys it
                continue
            if response.status_code != 200:
                with self.lock:
                    self.phase.other_errors.append(f"HTTP {response.status_code}: {response.text[:80]}")
                return None
            return bool(response.json()["written"])
        with self.lock:
            self.phase.other_errors.append(f"batch {post.batch_id} not answered after 50 attempts")
        return None

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                   "Content-Encoding": "gzip"}
        with httpx.Client(base_url=self.urls[n % len(self.urls)], headers=headers, timeout=60,
                          limits=pooled()) as client:
            while (post := self.jobs.get()) is not None:
                sent = time.monotonic()
                written = self._send(client, post)
                done = time.monotonic()
                again = self.dup_rng.random() < 0.05
                refused = again and self._send(client, post) is False
                with self.lock:
                    phase = self.phase
                    phase.lag_max = max(phase.lag_max, sent - phase.started - post.due)
                    phase.latencies.append(done - sent)
                    if written:
                        phase.posted += 1
                        phase.connections += post.connections
                        phase.edges += self.edges_per_batch
                    elif written is False:
                        phase.other_errors.append("a new batch id reported as delivered before")
                    if again and not refused:
                        phase.other_errors.append("a repeated batch id was not recognised")
                    phase.duplicates_refused += refused
                self.jobs.task_done()

    def run(self, phase: Phase, posts: list[Post], max_lag: float | None = None) -> Phase:
        """Feed ``posts`` (each at its ``due`` time; encoded beforehand, so that this generator's CPU in
        the phase is posting only) and wait until all are answered; stop feeding once a post left more
        than ``max_lag`` seconds late."""
        self.phase = phase
        phase.started = time.monotonic()
        for post in posts:
            if max_lag is not None and phase.lag_max > max_lag:
                phase.fell_behind = time.monotonic() - phase.started
                break
            delay = phase.started + post.due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule of an open-loop load
            self.jobs.put(post)
        self.jobs.join()
        phase.ended = time.monotonic()
        return phase

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


def steady(maker: BatchMaker, nodes: int, interval: float, minutes: float) -> list[Post]:
    rounds = max(1, int(minutes * 60 / interval))
    phases = [random.Random(11).random() * interval for _ in range(nodes)]
    schedule = sorted((r * interval + phases[n], n) for r in range(rounds) for n in range(nodes))
    return [maker.make(node, offset) for offset, node in schedule]


def herd(maker: BatchMaker, nodes: int, spool: int) -> list[Post]:
    return [maker.make(node, 0.0) for _ in range(spool) for node in range(nodes)]


def stored_totals(url: str) -> tuple[int, int]:
    """(connections, deliveries) the store holds, read through the server as `flows`/`status` do."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        edges = client.get("/v1/edges").raise_for_status().json()
        deliveries = client.get("/v1/deliveries").raise_for_status().json()
    return sum(int(e["connections"]) for e in edges), int(deliveries["batches"])


def run_backend(db: Database, args: argparse.Namespace, graph: Graph, token_file: str) -> None:
    extra = [*(["--writers", str(args.writers)] if args.writers else [])]
    replicas = args.replicas if db.name == "postgresql" else 1
    servers = [Server(db.url, token_file, extra) for _ in range(replicas)]
    poster = Poster([s.url for s in servers], args.workers, args.edges)
    maker = BatchMaker(graph, args.edges, seed=5)
    offered = args.nodes / args.interval
    print(f"{db.name}: {replicas} serve process(es), {args.nodes} nodes x 1 batch / {args.interval:g} s "
          f"= {offered:.0f} batches/s offered, {args.edges} edges per batch, graph {graph.edges} edges")
    steady_posts = steady(maker, args.nodes, args.interval, args.minutes)
    herd_posts = herd(maker, args.nodes, args.spool) if args.spool else []
    cpu_before = {p: _cpu_seconds(p) for p in [os.getpid(), *(s.process.pid for s in servers), *db.backends()]}
    phases = [poster.run(Phase("steady"), steady_posts, args.max_lag)]
    if herd_posts:
        phases.append(poster.run(Phase(f"herd ({args.spool} spooled batches per node at once)"), herd_posts))
    backends = db.backends()
    db_pss = sum(_pss_kb(p) for p in backends) / 1024
    cpu = {p: _cpu_seconds(p) - cpu_before.get(p, 0.0) for p in [os.getpid(), *(s.process.pid for s in servers),
                                                                    *backends]}
    poster.close()
    for phase in phases:
        print(phase.report())
    posted = sum(p.posted for p in phases)
    connections = sum(p.connections for p in phases)
    read_start = time.monotonic()
    stored, deliveries = stored_totals(servers[0].url)
    read_s = time.monotonic() - read_start
    size = db.size_bytes()
    node_days = args.nodes * sum(p.ended - p.started for p in phases) / 86400
    ok = stored == connections and deliveries == posted
    print(f"  exactly-once: posted {posted} batches / {connections} connections, store holds {deliveries} / "
          f"{stored} ({'equal' if ok else 'MISMATCH'}); repeats recognised "
          f"{sum(p.duplicates_refused for p in phases)}; reading all edges back {read_s:.2f} s")
    rss = ", ".join(f"{_status_kb(s.process.pid, 'VmHWM') / 1024:.0f}" for s in servers)
    print(f"  peak RSS per serve process {rss} MiB; database backends PSS {db_pss:.0f} MiB ({len(backends)} backends)")
    print(f"  CPU s: load generator {cpu[os.getpid()]:.0f}, serve {sum(cpu[s.process.pid] for s in servers):.0f}, "
          f"database {sum(cpu[p] for p in backends):.0f} (of {2 * sum(p.ended - p.started for p in phases):.0f} "
          f"core-s on 2 cores)")
    print(f"  database size {size / 2**20:.1f} MiB = {size / 2**20 / node_days:.1f} MiB per node-day "
          f"({node_days * 24:.2f} node-hours)")
    for server in servers:
        server.stop()
    if not ok:
        raise SystemExit("exactly-once violated")
    if any(p.other_errors for p in phases):
        raise SystemExit("some posts were not answered 2xx (see 'other errors' above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between a node's batches")
    parser.add_argument("--minutes", type=float, default=0.5, help="length of the steady phase")
    parser.add_argument("--max-lag", type=float, default=10.0,
                        help="seconds behind schedule at which the steady phase stops (the store fell behind)")
    parser.add_argument("--edges", type=int, default=200, help="edges per batch")
    parser.add_argument("--spool", type=int, default=1, help="batches per node in the herd (0: no herd)")
    parser.add_argument("--workers", type=int, default=64, help="posts in flight at most")
    parser.add_argument("--replicas", type=int, default=1, help="serve processes (PostgreSQL only)")
    parser.add_argument("--writers", type=int, default=None, help="serve --writers")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    if args.minutes > 15 or args.nodes > 5000:
        raise SystemExit("bounded: --minutes <= 15, --nodes <= 5000")
    graph = build_graph(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp, "token")
        token_file.write_text(TOKEN)
        names = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
        for name in names:
            with database(name, tmp) as db:
                run_backend(db, args, graph, str(token_file))


if __name__ == "__main__":
    main()
