"""May learning stop? What ``status`` adds to :mod:`netpol_gen.store.progress`: the trend of new edges,
how many of the workloads known have been seen talking, what each shadow set would have denied, the
attempts never answered (denied in force), and the recommendation.

Export is recommended only when the new-edge rate has settled: the state is ``settled`` (no new edge
in the last hour while deliveries still arrive) and the trend is not rising (the last
:data:`TREND_HOURS` hours brought no more new edges than the :data:`TREND_HOURS` before them). One new
edge turns the recommendation back to "keep learning". Workloads known (their pods were in a cluster
view the store was given) but never seen in an edge are named: a CronJob that runs weekly, or a
workload whose traffic the collectors do not see, would have no policy allowing anything for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from netpol_gen.model.identity import IdentityKind
from netpol_gen.model.listings import EdgeRow
from netpol_gen.names import UNKNOWN_SIDE
from netpol_gen.store.progress import HOUR, Status
from netpol_gen.store.shadow import DeniedEdge

TREND_HOURS = 6
EXPORT, KEEP_LEARNING = "export", "keep learning"


@dataclass(frozen=True)
class Readiness:
    trend: str  # rising | falling | steady | none (no new edge in either window)
    new_recent: int  # new edges in the last TREND_HOURS hours
    new_before: int  # in the TREND_HOURS hours before those
    workloads_known: int
    workloads_seen: int  # known workloads with at least one edge
    never_seen: list[str] = field(default_factory=list)  # <ns>/<Kind>/<name>
    denied_by_set: dict[str, int] = field(default_factory=dict)  # connections each shadow set would deny
    unanswered: int = 0  # connection attempts never answered: denied in force (or a dead peer)
    unanswered_edges: int = 0
    recommendation: str = KEEP_LEARNING
    reason: str = ""


def _trend(recent: int, before: int) -> str:
    if recent == before:
        return "none" if recent == 0 else "steady"
    return "rising" if recent > before else "falling"


def assess(status: Status, edges: Iterable[EdgeRow], workloads: Iterable[str], denied: Iterable[DeniedEdge],
           now: float) -> Readiness:
    """The readiness at ``now``; ``workloads`` are the known ones as ``<ns>/<Kind>/<name>``."""
    edges = list(edges)
    window = TREND_HOURS * HOUR
    recent = sum(1 for e in edges if e.first_seen is not None and e.first_seen >= now - window)
    before = sum(1 for e in edges if e.first_seen is not None and now - 2 * window <= e.first_seen < now - window)
    trend = _trend(recent, before)
    seen = {identity.describe() for e in edges for identity in (e.src, e.dst) if identity.kind is IdentityKind.POD}
    known = sorted(set(workloads))
    by_set: dict[str, int] = {}
    attempts = edges_unanswered = 0
    for edge in denied:
        if edge.side != UNKNOWN_SIDE:  # an edge only seen unanswered is no set's verdict
            by_set[edge.set] = by_set.get(edge.set, 0) + edge.connections
        if edge.unanswered:
            attempts += edge.unanswered
            edges_unanswered += 1
    if status.state != "settled":
        recommendation, reason = KEEP_LEARNING, f"learning is {status.state}"
    elif trend == "rising":
        recommendation, reason = KEEP_LEARNING, (f"new edges are rising: {recent} in the last {TREND_HOURS} h, "
                                                 f"{before} in the {TREND_HOURS} h before")
    else:
        recommendation, reason = EXPORT, "no new edge in the last hour and the new-edge rate is not rising"
    return Readiness(trend, recent, before, len(known), sum(1 for w in known if w in seen),
                     [w for w in known if w not in seen], dict(sorted(by_set.items())), attempts,
                     edges_unanswered, recommendation, reason)
