"""Shadow sets judged: every batch the store takes, from a collector, ``serve`` or ``import``, goes
through the evaluator against each set added before it, and what a set would deny is recorded in the
batch's own transaction (exactly once, however often the batch is delivered).

The evaluator decides; this module only asks it. Each edge of a batch keeps a few of its flows as
samples (every edge has at least one); each sample is judged as ``check`` judges a flow
(:meth:`Evaluator.judge_flow`: its addresses at its time, a Service address as its backends), keeping
the verdicts that land on the edge's destination workload and port. When every sample is denied, all
the edge's connections are; when only some are (pods of one workload that policies tell apart), the
same share of its connections is counted, at least one. The cluster judged against is the one the
batch was attributed against when it came with it, else the store's own, read again whenever some
writer changed it (another serve replica may have taken the collector's latest view).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from netpol_gen.errors import PolicyError
from netpol_gen.model.aggregate import Batch, EdgeKey, EdgeTotals
from netpol_gen.model.bounds import name_problem
from netpol_gen.model.cluster import Cluster
from netpol_gen.model.documents import Document
from netpol_gen.model.flows import Flow
from netpol_gen.model.identity import Identity
from netpol_gen.store.db import Store
from netpol_gen.store.revision import cluster_revision
from netpol_gen.store.shadow import Denial, ShadowSetError, StoredSet, load_sets, record_denials, roll_up, set_versions
from netpol_gen.store.unanswered import roll_up as roll_up_unanswered

if TYPE_CHECKING:  # the evaluator is imported where a set is parsed or judged: see _parse
    from netpol_gen.evaluator.engine import Evaluator
    from netpol_gen.evaluator.policy import NetworkPolicy
    from netpol_gen.evaluator.verdict import SideVerdict, Verdict


def check_name(name: str) -> None:
    """A set name is a DNS-1123 label (it becomes a metric label and a URL path segment)."""
    problem = name_problem(name, namespace=True)
    if problem:
        raise ShadowSetError(problem, where=f"shadow set {name!r}")


def documents_of(raw: Iterable[Any]) -> list[Document]:
    """Stored or sent documents (``{"where", "obj"}``) as documents."""
    return [Document(str(item["where"]), dict(item["obj"])) for item in raw]


def validate(documents: Sequence[Document]) -> list[NetworkPolicy]:
    """The set's policies, or PolicyError naming the document (as ``check --policies`` would)."""
    if not documents:
        raise PolicyError("no policy in this set")
    return _parse(documents)


def _parse(documents: Sequence[Document]) -> list[NetworkPolicy]:
    """The evaluator's parse, imported here: a store without shadow sets never loads the evaluator."""
    from netpol_gen.evaluator.frontends import parse_documents

    return parse_documents(documents)


def _side_policies(side: SideVerdict) -> tuple[str, ...]:
    return (*side.isolating, *(ref.policy for ref in side.denied_by))


def _lands(verdict: Verdict, dst: Identity, port: int) -> bool:
    pod = verdict.dst.pod
    return verdict.port == port and (pod is None or Identity.of_pod(pod) == dst)


def judge_edge(evaluator: Evaluator, set_id: int, key: EdgeKey, totals: EdgeTotals, now: float) -> Denial | None:
    """What ``evaluator`` says of one edge of a batch: None when it allows every sample."""
    src, dst, port, protocol = key
    denied: list[Verdict] = []
    denied_samples = 0
    for sample in totals.samples:
        result = evaluator.judge_flow(Flow(sample.src_ip, sample.dst_ip, sample.dst_port, protocol, sample.src_port,
                                           sample.ts))
        verdicts = [v for v in result.verdicts if _lands(v, dst, port)] or list(result.verdicts)
        refused = [v for v in verdicts if not v.allowed]
        denied.extend(refused)
        denied_samples += bool(refused)
    if not denied:
        return None
    sides = {side.direction.lower() for verdict in denied for side in (verdict.egress, verdict.ingress)
             if not side.allowed}
    policies = sorted({name for verdict in denied for side in (verdict.egress, verdict.ingress) if not side.allowed
                       for name in _side_policies(side)})
    share = totals.connections if denied_samples == len(totals.samples) else max(
        1, round(totals.connections * denied_samples / len(totals.samples)))
    return Denial(set_id, src, dst, port, protocol, "both" if len(sides) == 2 else sides.pop(), tuple(policies),
                  denied[0].src.ip, denied[0].dst.ip, share, totals.first_seen or now, totals.last_seen or now)


@dataclass
class _Judged:
    stored: StoredSet
    policies: list[NetworkPolicy]
    evaluator: Evaluator | None = None
    cluster: Cluster | None = None


ROLL_UP_EVERY = 600.0  # seconds between two roll-ups by one judge (any judge's roll-up serves all)


class ShadowJudge:
    """Judges batches against the store's shadow sets; parsed sets and their evaluators are kept
    between batches (an evaluator caches its verdicts) until the set or the cluster view changes."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store, self._clock = store, clock
        self._sets: dict[int, _Judged] = {}
        self._stored: tuple[str | None, Cluster] | None = None  # the store's view and its revision
        self._lock = threading.Lock()
        self._rolled = 0.0  # when this judge last rolled denials up

    def _store_view(self, revision: str | None) -> Cluster:
        """The store's cluster, read again when its revision moved (any writer, any process)."""
        if self._stored is None or self._stored[0] != revision:
            # here: a batch judged against the view it came with (every import's) needs no reader of the store's
            from netpol_gen.store.cluster_view import load_cluster

            self._stored = (revision, load_cluster(self.store))
        return self._stored[1]

    def judge(self, batch: Batch, cluster: Cluster | None = None) -> list[Denial]:
        """The denials of ``batch`` by every set in the store now (read, not written)."""
        return self.judge_all([(batch, cluster)])[0]

    def judge_all(self, batches: Sequence[tuple[Batch, Cluster | None]]) -> list[list[Denial]]:
        """:meth:`judge` of each batch (with its cluster view or None), the sets read once for all."""
        with self._lock:
            with self.store.reading() as conn:
                versions, revision = set_versions(conn), cluster_revision(conn)
                changed = [i for i, added in versions.items() if i not in self._sets
                           or self._sets[i].stored.added_at != added]
                for stored in load_sets(conn, changed) if changed else ():
                    self._sets[stored.id] = _Judged(stored, _parse(documents_of(stored.documents)))
            for gone in set(self._sets) - set(versions):
                del self._sets[gone]
            if not self._sets:
                return [[] for _ in batches]
            now = self._clock()
            return [self._denials(batch, cluster if cluster is not None else self._store_view(revision), now)
                    if batch.edges else [] for batch, cluster in batches]

    def _denials(self, batch: Batch, view: Cluster, now: float) -> list[Denial]:
        from netpol_gen.evaluator.engine import Evaluator

        denials = []
        for judged in self._sets.values():
            if judged.evaluator is None or judged.cluster is not view:
                judged.evaluator, judged.cluster = Evaluator(view, judged.policies), view
            for key, totals in batch.edges.items():
                denial = judge_edge(judged.evaluator, judged.stored.id, key, totals, now)
                if denial is not None:
                    denials.append(denial)
        return denials

    def recorder(self, batch: Batch, cluster: Cluster | None = None) -> Callable[[Connection], None]:
        """What to run in the batch's transaction: record its denials (judged now, before the transaction),
        and, every :data:`ROLL_UP_EVERY` seconds, roll day-old minutes up into hours."""
        return self.recorders([(batch, cluster)])[0]

    def recorders(self, batches: Sequence[tuple[Batch, Cluster | None]]) -> list[Callable[[Connection], None]]:
        """:meth:`recorder` of each batch of a group (the sets read once); the first rolls up when due."""
        judged = self.judge_all(batches)
        now = self._clock()
        rolling = now - self._rolled >= ROLL_UP_EVERY
        if rolling:
            self._rolled = now

        def recording(denials: list[Denial], roll: bool) -> Callable[[Connection], None]:
            def record(conn: Connection) -> None:
                record_denials(conn, denials, now)
                if roll:
                    roll_up(conn, now)
                    roll_up_unanswered(conn, now)
            return record
        return [recording(denials, rolling and n == 0) for n, denials in enumerate(judged)]


def deliver_judged(judge: ShadowJudge, batch_id: str, batch: Batch, flows: int, source: str,
                   cluster: Cluster | None = None) -> bool:
    """:func:`deliver_batch` with the batch's shadow denials recorded in its transaction."""
    from netpol_gen.store.batches import deliver_batch  # here: import, which judges its own batch, delivers none

    return deliver_batch(judge.store, batch_id, batch, flows, source, cluster, then=judge.recorder(batch, cluster))
