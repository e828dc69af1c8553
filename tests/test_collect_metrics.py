"""The collector's HTTP endpoint: Prometheus metrics, liveness and readiness on one server."""

from __future__ import annotations

import urllib.error
import urllib.request

from netpol_gen.collector.metrics import Health, Metrics, serve


def _get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_probes() -> None:
    metrics, health = Metrics(), Health(stale_after=60)
    server = serve("127.0.0.1", 0, metrics, health)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        metrics.kernel_drops.inc(3)
        metrics.spool_bytes.set(4096)
        status, body = _get(base, "/metrics")
        assert status == 200
        assert "netpol_collect_kernel_drops_total 3.0" in body
        assert "netpol_collect_spool_bytes 4096.0" in body
        assert _get(base, "/healthz")[0] == 200
        assert _get(base, "/readyz")[0] == 503  # not capturing on any interface yet
        health.ready = True
        assert _get(base, "/readyz")[0] == 200
        health.beat -= 120  # the capture loop has not gone round for two minutes
        assert _get(base, "/healthz")[0] == 503
        assert _get(base, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
