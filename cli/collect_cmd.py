"""``netpol-gen collect``: capture connection starts on this node and feed the store (or files) every interval."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.options import db_option, parse_listen
from netpol_gen.names import ENV_TOKEN

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.collector.capture_sinks import BatchTarget
    from netpol_gen.collector.kube import ClusterSource

log = logging.getLogger("netpol_gen.collect")
SYNC_WARN_AFTER = 30  # seconds between warnings while the live API's first lists are missing


def _source(clusters: tuple[str, ...], kubeconfig: str | None, needed: bool, stack: ExitStack,
            stop: threading.Event) -> ClusterSource | None:
    """``--cluster`` files, else the live API (in a cluster, with --kubeconfig, or when a store needs
    attribution); None when only files are written and no cluster was named."""
    from netpol_gen.collector.kube import LiveClusterSource, StaticClusterSource
    from netpol_gen.model import load_cluster

    if clusters:
        return StaticClusterSource(load_cluster(clusters, require_pods=True))
    if not (needed or kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST")):
        return None
    live = LiveClusterSource.connect(kubeconfig)
    live.start()
    stack.callback(live.stop)
    log.info("waiting for the cluster view from the API")
    waited = 0
    while not stop.is_set() and not live.wait_synced(1.0):  # stop: SIGTERM before the API answered
        waited += 1
        if waited % SYNC_WARN_AFTER == 0:
            log.warning("the API has not listed every resource yet; still waiting", extra={"fields": {
                "seconds": waited, "errors": live.stats.errors}})
    return live


def _token(token: str | None, token_file: str | None) -> Callable[[], str]:
    from netpol_gen.collector.capture_targets import DeliveryError

    if token_file is None:
        if not token:
            raise click.UsageError(f"--server needs --token, --token-file or ${ENV_TOKEN}")
        return lambda: token

    def read() -> str:  # each delivery: a projected service-account token is rotated in place
        try:
            with open(token_file, encoding="utf-8") as stream:
                return stream.read().strip()
        except OSError as exc:
            raise DeliveryError(f"cannot read the token: {exc.strerror}") from None

    read()  # a bad path is a mistake to report now, not a delivery to spool
    return read


def _established_sources(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    from netpol_gen.collector.established import parse_sources

    try:
        return parse_sources(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("collect")
@db_option
@click.option("--output", "outputs", multiple=True, metavar="jsonl:FILE|pcap:FILE",
              help="Also (or, without --db, only) write flows as JSONL (appended to) or the captured frames "
                   "as pcap (written anew); repeatable.")
@click.option("--server", "server_url", default=None, metavar="URL",
              help="Deliver batches to `netpol-gen serve` at this URL instead of a local --db.")
@click.option("--token", default=None, envvar=ENV_TOKEN, show_envvar=True, help="Bearer token for --server.")
@click.option("--token-file", default=None, help="File holding the token for --server, read at each delivery.")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
              help="Trust only this CA (PEM) for an https:// --server, e.g. the one that signed serve's --tls-cert "
                   "[default: the system's CAs or $SSL_CERT_FILE].")
@click.option("--cluster", "clusters", multiple=True,
              help="Cluster snapshot file or directory (static) [default: the live API].")
@click.option("--kubeconfig", default=None,
              help="Kubeconfig for the live API [default: in-cluster, else $KUBECONFIG or ~/.kube/config].")
@click.option("--iface", "interfaces", multiple=True,
              help="Capture on these interfaces only (repeatable) [default: every pod interface, re-detected].")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between batches.")
@click.option("--spool", "spool_path", default=":memory:", show_default=True,
              help="SQLite file for batches the store cannot take yet (a file survives restarts); batches the "
                   "store rejects (4xx) are kept in its `rejected` table, never retried.")
@click.option("--spool-max-mb", type=click.FloatRange(min=0.1), default=256.0, show_default=True)
@click.option("--health", "listen", default=None, metavar="[HOST:]PORT",
              help="Serve /metrics, /healthz and /readyz here (port 0: any free port, logged).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--max-tracked", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Connections held in memory before an early cut.")
@click.option("--established-sources", "established", default="conntrack,sockets", show_default=True,
              callback=_established_sources, metavar="conntrack,sockets|none",
              help="Tables of open connections read at start and every --established-interval, to learn "
                   "connections opened before capture started: the node's conntrack table (needs NET_ADMIN), "
                   "the pods' socket tables under /proc (needs hostPID and SYS_PTRACE); `none` for neither.")
@click.option("--established-interval", type=click.FloatRange(min=1.0), default=300.0, show_default=True,
              help="Seconds between reads of the tables of open connections.")
def collect_cmd(db_url: str | None, outputs: tuple[str, ...], server_url: str | None, token: str | None,
                token_file: str | None, ca_file: str | None, clusters: tuple[str, ...], kubeconfig: str | None,
                interfaces: tuple[str, ...], interval: float, spool_path: str, spool_max_mb: float,
                listen: str | None, log_format: str, max_tracked: int, established: tuple[str, ...],
                established_interval: float) -> None:
    """Capture TCP handshakes, UDP requests and DNS answers on this node and learn who talks to whom.

    Runs in the foreground until SIGTERM or SIGINT, then writes everything seen so far and exits 0.
    With a store that is unreachable, capture goes on and batches wait in the spool.
    """
    from netpol_gen.collector.agent import Agent, AgentConfig
    from netpol_gen.collector.capture_sinks import StoreSink, open_outputs
    from netpol_gen.collector.capture_targets import DbTarget, ServerTarget
    from netpol_gen.collector.logs import configure
    from netpol_gen.collector.metrics import Health, Metrics, serve
    from netpol_gen.collector.spool import Spool

    configure(log_format)
    if db_url and server_url:
        raise click.UsageError("--db and --server exclude each other")
    name = f"collect:{os.environ.get('NODE_NAME') or socket.gethostname()}"
    target: BatchTarget | None = None
    if server_url:
        target = ServerTarget(server_url, _token(token, token_file), name, ca_file=ca_file)
    elif db_url or not outputs:
        target = DbTarget(db_url, name)
    sinks, frame_sinks = open_outputs(outputs)
    metrics = Metrics()
    health = Health(stale_after=3 * max(interval, 2.0) + 5)
    if listen is not None:  # first: the liveness probe must answer while the API is being listed
        server = serve(*parse_listen(listen, "--health"), metrics, health)  # probes come from the kubelet
        host, port = server.server_address[:2]
        log.info("serving metrics and probes", extra={"fields": {"url": f"http://{host!s}:{port}"}})
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping: flushing what was seen", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with ExitStack() as stack:
        source = _source(clusters, kubeconfig, target is not None, stack, stop)
        if target is not None:
            assert source is not None
            sinks.append(StoreSink(target, source, Spool(spool_path, int(spool_max_mb * (1 << 20))), metrics))
        config = AgentConfig(interval=interval, interfaces=interfaces, rediscover_every=min(interval, 2.0),
                             max_tracked=max_tracked, established_sources=established,
                             established_interval=established_interval, node_name=os.environ.get("NODE_NAME"))
        log.info("collecting", extra={"fields": {"interval": interval, "established_sources": list(established),
                                                 "interfaces": list(interfaces) or "pod interfaces"}})
        Agent(config, source, sinks, metrics, health, frame_sinks).run(stop)
    log.info("stopped")
