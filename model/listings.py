"""What the store's readers return and ``serve`` sends alike: a learnt edge as ``flows`` lists it and the
deliveries ``status`` reports (collector batches, imported files). Plain data, so that the HTTP client
that decodes them (``--server``) loads no database code.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol_gen.model.identity import Identity


@dataclass(frozen=True)
class EdgeRow:
    src: Identity
    dst: Identity
    dst_port: int
    protocol: str
    connections: int
    packets: int | None
    bytes: int | None
    first_seen: float | None
    last_seen: float | None
    dst_names: tuple[str, ...]  # DNS names an external destination was reached under
    # connections learnt from tables of open connections (conntrack, sockets), by source; the rest captured
    established: tuple[tuple[str, int], ...] = ()
    unanswered: int = 0  # connection attempts never answered (denied in force, or a dead peer)


@dataclass(frozen=True)
class NodeDelivery:
    """One collector's deliveries: the latest, and its interval over the last
    :data:`~netpol_gen.store.progress.RECENT` seconds (None with fewer than two there)."""

    node: str
    last: float
    interval: float | None = None
    recent: int = 0  # batches in the last RECENT seconds


@dataclass(frozen=True)
class Deliveries:
    batches: int  # collector batches and imported files
    flows: int
    last: float | None  # when the latest one was written (seconds since the epoch)
    nodes: tuple[NodeDelivery, ...] = ()  # per collector; imports are not nodes
