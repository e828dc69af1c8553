"""``netpol-gen collect``: capture connection starts on this node and feed the store (or files) every interval."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass
from types import FrameType

import click

from netpol_gen.collector.agent import Agent, AgentConfig, ClusterSource, FrameSink, Sink
from netpol_gen.collector.capture_sinks import JsonlSink, PcapSink, StoreSink
from netpol_gen.collector.logs import configure
from netpol_gen.collector.metrics import Health, Metrics, serve
from netpol_gen.collector.spool import Spool
from netpol_gen.errors import InputError
from netpol_gen.evaluator import load_cluster
from netpol_gen.evaluator.cluster import Cluster
from netpol_gen.store.db import default_url

log = logging.getLogger("netpol_gen.collect")


@dataclass(frozen=True)
class _Snapshot:
    """A cluster snapshot read once (``--cluster``): for tests and air-gapped nodes."""

    cluster: Cluster

    def current(self) -> Cluster:
        return self.cluster


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter(f"expected [HOST:]PORT, got {value!r}", param_hint="--health")
    return host or "0.0.0.0", int(port)  # probes come from the kubelet, not localhost


def _outputs(outputs: tuple[str, ...]) -> tuple[list[Sink], list[FrameSink]]:
    sinks: list[Sink] = []
    frame_sinks: list[FrameSink] = []
    for output in outputs:
        kind, _, path = output.partition(":")
        if not path or kind not in ("jsonl", "pcap"):
            raise click.BadParameter(f"expected jsonl:FILE or pcap:FILE, got {output!r}", param_hint="--output")
        try:
            if kind == "jsonl":
                sinks.append(JsonlSink(open(path, "w", encoding="utf-8")))  # noqa: SIM115 - the sink closes it
            else:
                frame_sinks.append(PcapSink(path))
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", where=path) from None
    return sinks, frame_sinks


@click.command("collect")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Store to feed: sqlite:///PATH or postgresql+psycopg://... [default when no --output: "
                   "$NETPOL_GEN_DB or sqlite:///netpol-gen.db]")
@click.option("--output", "outputs", multiple=True, metavar="jsonl:FILE|pcap:FILE",
              help="Also (or, without --db, only) write flows as JSONL or the captured frames as pcap; repeatable.")
@click.option("--cluster", "clusters", multiple=True,
              help="Cluster snapshot file or directory (static); needed to write to a store.")
@click.option("--iface", "interfaces", multiple=True,
              help="Capture on these interfaces only (repeatable) [default: every pod interface, re-detected].")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between batches.")
@click.option("--spool", "spool_path", default=":memory:", show_default=True,
              help="SQLite file for batches the store cannot take yet (a file survives restarts).")
@click.option("--spool-max-mb", type=click.FloatRange(min=0.1), default=256.0, show_default=True)
@click.option("--health", "listen", default=None, metavar="[HOST:]PORT",
              help="Serve /metrics, /healthz and /readyz here (port 0: any free port, logged).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--max-tracked", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Connections held in memory before an early cut.")
def collect_cmd(db_url: str | None, outputs: tuple[str, ...], clusters: tuple[str, ...], interfaces: tuple[str, ...],
                interval: float, spool_path: str, spool_max_mb: float, listen: str | None, log_format: str,
                max_tracked: int) -> None:
    """Capture TCP handshakes, UDP requests and DNS answers on this node and learn who talks to whom.

    Runs in the foreground until SIGTERM or SIGINT, then writes everything seen so far and exits 0.
    With a store that is unreachable, capture goes on and batches wait in the spool.
    """
    configure(log_format)
    source: ClusterSource | None = _Snapshot(load_cluster(clusters, require_pods=True)) if clusters else None
    sinks, frame_sinks = _outputs(outputs)
    metrics = Metrics()
    if db_url or not outputs:
        if source is None:
            raise click.UsageError("writing to a store needs the cluster: --cluster FILE")
        spool = Spool(spool_path, int(spool_max_mb * (1 << 20)))
        sinks.append(StoreSink(db_url or default_url(), source, spool, metrics, f"collect:{socket.gethostname()}"))
    config = AgentConfig(interval=interval, interfaces=interfaces, rediscover_every=min(interval, 2.0),
                         max_tracked=max_tracked)
    health = Health(stale_after=3 * max(interval, 2.0) + 5)
    if listen is not None:
        server = serve(*_listen(listen), metrics, health)
        host, port = server.server_address[:2]
        log.info("serving metrics and probes", extra={"fields": {"url": f"http://{host!s}:{port}"}})
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping: flushing what was seen", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("collecting", extra={"fields": {"interval": interval, "interfaces": list(interfaces) or "pod interfaces"}})
    Agent(config, source, sinks, metrics, health, frame_sinks).run(stop)
    log.info("stopped")
