"""Learning the connections capture cannot see start: a scan of the node's open connections at start
and every ``--established-interval`` seconds.

Each scan reads the enabled sources (:mod:`.kernel_tables`), conntrack first: a connection both
sources name (by any of its four-tuples) is taken from conntrack, which knows the backend behind a
ClusterIP even when only the client's end is on this node. What a scan reports:

* at the first scan, every established connection: all of them were open before capture started;
* at later scans, a connection that was already open at the previous scan and was neither captured
  (its handshake seen) nor reported before. A connection that opened since the previous scan is
  capture's to learn (its SYN may still sit unread in a socket buffer while the scan runs); if
  capture missed it (kernel drops, an interface found late), the next scan reports it.

So a long-lived connection is counted once per collector run, and a connection capture learnt is
not counted again. A scan's findings are held until :data:`HOLD_CUTS` interval cuts have passed and
what capture learnt meanwhile is dropped from them: a connection opened while the tables were read
(a large conntrack table takes seconds) is open in them, and its SYN may still sit in the tracker
or in a socket buffer; reported at once, it would be counted twice (seen once in CI, at start).
Memory: one hash per connection open at the last scan, plus one per connection captured since then.

Like capture, a connection is reported on the node of its initiator, or, when the initiator is no
pod (a node, an external client), on the node of the server: with ``NODE_NAME`` set, "this node"
is the pods the cluster view places here; without it every pod counts as local (connections
between pods on two nodes may then be reported by both collectors, counted twice on the edge).
Without a cluster view (flows only written to files), every connection is reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netpol_gen.collector.kernel_tables import TableUnreadable, read_conntrack, read_pod_sockets
from netpol_gen.ingest.established import FourTuple, merge_views, socket_views, tuple_flow
from netpol_gen.model.aggregate import ESTABLISHED_SOURCES, SOURCE_CONNTRACK
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.flows import Flow

log = logging.getLogger("netpol_gen.collect")


@dataclass(frozen=True)
class PodScope:
    """Which addresses are pods (``pods``) and which of them run on this node (``local``)."""

    pods: frozenset[str]
    local: frozenset[str]

    @classmethod
    def of(cls, cluster: Cluster, node: str | None) -> PodScope:
        pods = [pod for pod in cluster.pods if not pod.host_network]
        every = frozenset(ip for pod in pods for ip in pod.ips)
        if node is None:
            return cls(every, every)
        return cls(every, frozenset(ip for pod in pods if pod.node_name == node for ip in pod.ips))

    def reports(self, conn: FourTuple) -> bool:
        """Whether this node reports ``conn``: its initiator is a local pod, or no pod and the server is."""
        src, dst = conn[0], conn[2]
        return src in self.local or (src not in self.pods and dst in self.local)


HOLD_CUTS = 2  # cuts a scan's findings wait for capture: the one in progress, and one whole interval


def _key(conn: FourTuple) -> int:
    return hash(conn)


@dataclass
class _Held:
    """A scan's findings waiting for capture: (source, the keys of every tuple it shows, the flow)."""

    scanned_at: float
    found: list[tuple[str, list[int], Flow]]
    cuts_left: int = HOLD_CUTS

    def due(self) -> dict[str, list[Flow]]:
        by_source: dict[str, list[Flow]] = {}
        for source, _, flow in self.found:
            by_source.setdefault(source, []).append(flow)
        return by_source


class EstablishedScanner:
    """Reads the enabled ``sources`` (``conntrack``, ``sockets``) and reports what capture did not learn."""

    def __init__(self, sources: Sequence[str], proc: str = "/proc") -> None:
        self.sources = tuple(sources)
        self._proc = proc
        self._lock = threading.Lock()
        self._known: set[int] = set()  # reported, while still open at the last scan
        self._captured: set[int] = set()  # handshakes captured since the last scan
        self._previous: set[int] | None = None  # open at the last scan; None before the first
        self._held: list[_Held] = []  # findings of scans waiting for the next cuts
        self._unreadable: dict[str, str] = {}  # source -> why, warned once until it reads again

    def captured(self, flows: Iterable[Flow]) -> list[tuple[float, dict[str, list[Flow]]]]:
        """Flows capture learnt at a cut (from the capture thread): never reported by a scan. Returns the
        findings now due, (scan time, flows by source), less every connection capture learnt since."""
        keys = {_key((f.src_ip, f.src_port, f.dst_ip, f.dst_port)) for f in flows
                if f.protocol == "TCP" and f.src_port is not None}
        with self._lock:
            self._captured.update(keys)
            for held in self._held:
                held.found = [entry for entry in held.found if not any(k in keys for k in entry[1])]
                held.cuts_left -= 1
            due = [held for held in self._held if held.cuts_left <= 0]
            self._held = [held for held in self._held if held.cuts_left > 0]
        return [(held.scanned_at, held.due()) for held in due if held.found]

    def release(self) -> list[tuple[float, dict[str, list[Flow]]]]:
        """Every finding still held, once capture has stopped (after its last cut): nothing is lost."""
        with self._lock:
            held, self._held = self._held, []
        return [(h.scanned_at, h.due()) for h in held if h.found]

    def _read(self) -> list[tuple[str, FourTuple, tuple[FourTuple, ...]]]:
        """(source, the connection initiator first, every tuple it shows) for each open connection."""
        found: list[tuple[str, FourTuple, tuple[FourTuple, ...]]] = []
        for source in self.sources:
            try:
                if source == SOURCE_CONNTRACK:
                    found.extend((source, entry.flow_tuple, entry.tuples) for entry in read_conntrack())
                else:
                    views = [view for table in read_pod_sockets(self._proc) for view in socket_views(table)]
                    found.extend((source, conn, (conn,)) for conn in merge_views(views))
            except TableUnreadable as exc:
                if self._unreadable.get(source) != str(exc):
                    log.warning("cannot read open connections", extra={"fields": {
                        "source": source, "error": str(exc)}})
                self._unreadable[source] = str(exc)
                continue
            if self._unreadable.pop(source, None) is not None:
                log.info("open connections readable again", extra={"fields": {"source": source}})
        return found

    def scan(self, now: float, scope: PodScope | None) -> dict[str, int]:
        """Read the tables; hold the connections to report, as flows at ``now``, for the next cuts (see
        the module doc). Returns how many each source found."""
        found = self._read()
        reported: list[tuple[str, list[int], Flow]] = []
        counts: dict[str, int] = {}
        with self._lock:
            captured, previous = self._captured, self._previous
            known = self._known | captured
            open_now: set[int] = set()
            for source, conn, tuples in found:
                keys = [_key(t) for t in tuples]
                if any(k in open_now for k in keys):  # named by a source read before
                    continue
                open_now.update(keys)
                if scope is not None and not scope.reports(conn):
                    continue
                if any(k in known for k in keys):
                    continue
                if previous is not None and not any(k in previous for k in keys):
                    continue
                known.update(keys)
                reported.append((source, keys, tuple_flow(conn, now)))
                counts[source] = counts.get(source, 0) + 1
            # What is still open stays known; what capture saw since the last scan is kept one scan
            # longer (it may have opened after the tables were read).
            self._known = {k for k in known if k in open_now} | captured
            self._captured = set()
            self._previous = open_now
            if reported:
                self._held.append(_Held(now, reported))
        return counts


def parse_sources(value: str) -> tuple[str, ...]:
    """``--established-sources``: a comma-separated subset of conntrack,sockets, or ``none``."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if names in ((), ("none",)):
        return ()
    unknown = [name for name in names if name not in ESTABLISHED_SOURCES]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r} (expected conntrack, sockets or none)")
    return names
