"""Everything ``status`` reports, read from a store or a server in one call."""

from __future__ import annotations

from dataclasses import dataclass

from netpol_gen.service.shadow_source import shadow_source
from netpol_gen.service.source import learning_source
from netpol_gen.store.progress import Status, summarize
from netpol_gen.store.readiness import Readiness, assess


@dataclass(frozen=True)
class StatusReport:
    status: Status
    readiness: Readiness


def status_report(db_url: str | None, server_url: str | None, token: str | None, now: float,
                  hours: int) -> StatusReport:
    with learning_source(db_url, server_url, token) as source:
        edges, deliveries = source.edges(), source.deliveries()
        workloads = [f"{w.namespace}/{w.kind}/{w.name}" for w in source.learned().workloads]
    with shadow_source(db_url, server_url, token) as shadows:
        denied = shadows.denied(None, None)
    status = summarize(edges, deliveries, now, hours)
    return StatusReport(status, assess(status, edges, workloads, denied, now))
