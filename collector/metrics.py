"""What the collector exports and serves: Prometheus metrics, liveness and readiness, one HTTP server.

Liveness is the capture loop having gone round recently (a wedged loop is restarted by the
kubelet); readiness is capturing on at least one interface with a cluster view loaded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


def _counter(registry: CollectorRegistry, name: str, doc: str) -> Counter:
    return Counter(f"netpol_collect_{name}", doc, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(f"netpol_collect_{name}", doc, registry=registry)


@dataclass
class Metrics:
    """The collector's metrics in their own registry (several collectors can live in one test process)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.packets = _counter(r, "packets", "Frames that passed the kernel filter and were read.")
        self.kernel_drops = _counter(r, "kernel_drops", "Frames the kernel dropped (socket buffer full).")
        self.other_end = _counter(r, "other_end_sightings",
                                  "Frames skipped: a pod's connection seen at the receiving pod.")
        self.flows = _counter(r, "flows", "Connections taken from the tracker.")
        self.dns_answers = _counter(r, "dns_answers", "DNS answer records parsed.")
        self.syn_retransmits = _counter(r, "syn_retransmits",
                                        "TCP SYNs seen again (retransmitted), not new connections.")
        self.unanswered = _counter(r, "unanswered_attempts",
                                   "TCP connection attempts no SYN-ACK answered within an interval (dropped).")
        self.batches_written = _counter(r, "batches_written", "Batches committed to the store.")
        self.batches_spooled = _counter(r, "batches_spooled", "Batches spooled while the store was unreachable.")
        self.batches_dropped = _counter(r, "spool_batches_dropped", "Oldest spooled batches dropped when full.")
        self.store_errors = _counter(r, "store_errors", "Failed deliveries to the store.")
        self.batches_rejected = _counter(r, "batches_rejected",
                                         "Batches the store refused as malformed (4xx), kept in the spool's "
                                         "rejected table, never retried.")
        self.watch_restarts = _gauge(r, "api_watch_restarts", "Kubernetes API watch restarts, if the source counts.")
        self.interfaces = _gauge(r, "interfaces", "Interfaces captured on.")
        self.tracked = _gauge(r, "tracked_connections", "Connections held by the tracker.")
        self.spool_bytes = _gauge(r, "spool_bytes", "Bytes of batches waiting in the spool.")
        self.spool_batches = _gauge(r, "spool_batches", "Batches waiting in the spool.")
        self.established = Counter(
            "netpol_collect_established_connections",
            "Open connections a scan reported (not seen starting), by source.", ["source"], registry=r)
        self.learnt_edges = Counter(
            "netpol_collect_learnt_edges", "Edges in the batches handed to the store, by the source that learnt "
            "them (capture, conntrack, sockets; an edge in several batches counts in each).", ["source"], registry=r)
        self.backlog = _gauge(r, "delivery_backlog", "Intervals cut but not yet delivered or spooled.")


@dataclass
class Health:
    """Set by the collector, read by the probes."""

    stale_after: float
    beat: float = field(default_factory=time.monotonic)
    ready: bool = False

    def alive(self) -> bool:
        return time.monotonic() - self.beat < self.stale_after


def serve(address: str, port: int, metrics: Metrics, health: Health) -> ThreadingHTTPServer:
    """Start ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread; port 0 picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"capture loop stalled\n")
            elif self.path == "/readyz":
                ok = health.ready
                self._send(200 if ok else 503, b"ok\n" if ok else b"not capturing yet\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes are not news
            return

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
