"""Group commit for ``serve``: the batches that requests queued meanwhile are written in one transaction
by a writer thread, while the requests wait as coroutines.

A request queues its decoded batch with a future and awaits it; a writer (at most ``writers`` at
once, one by default on both engines) takes what is queued, up to :data:`GROUP`, writes it through
:func:`~netpol_gen.store.batches.deliver_batches`, and answers the group's futures in one call into
the event loop. No thread is parked per waiting request: at a thundering herd the requests in flight
cost a future each, not a thread each contending for the interpreter lock, and the writer sees
every queued batch (a thread pool of 40 bounded a group to the requests it held). A writer runs
while the queue holds batches and ends when it is empty; the next batch starts one again.

One commit serves many collectors, and their shared edges are written once. A group the database
refuses is retried; if it still fails, each batch is written alone so that one bad batch fails only
its own request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from netpol_gen.service.shadow import ShadowJudge
from netpol_gen.service.wire import BatchMessage
from netpol_gen.store.batches import Delivery, deliver_batches
from netpol_gen.store.db import Store
from netpol_gen.store.writer import Known

log = logging.getLogger("netpol_gen.serve")

WRITE_ATTEMPTS = 5
GROUP = 64  # batches per transaction at most


@dataclass
class _Pending:
    """A batch waiting in the queue, and where its answer goes: True when written, False when its id
    was delivered before, or the error that stopped it."""

    message: BatchMessage
    source: str
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[bool] = field(init=False)
    written: bool = False
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.answer = self.loop.create_future()


def _answer(group: list[_Pending]) -> None:
    """In the event loop: each request of a written group gets its answer."""
    for pending in group:
        if pending.answer.done():  # the request went away (client disconnected)
            continue
        if pending.error is not None:
            pending.answer.set_exception(pending.error)
        else:
            pending.answer.set_result(pending.written)


class Ingestor:
    """Writes queued batches by group commit, each batch judged against the shadow sets and its
    denials recorded in its group's transaction."""

    def __init__(self, store: Store, writers: int) -> None:
        self.store = store
        self.judge = ShadowJudge(store)
        self.known = Known()
        self._writers = writers
        self._running = 0  # writers started and not yet ended, under _lock
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="netpol-gen-writer")

    async def deliver(self, message: BatchMessage, source: str) -> bool:
        """True when written, False when this batch id was delivered before; what stopped it otherwise."""
        pending = _Pending(message, source, asyncio.get_running_loop())
        with self._lock:
            self._queue.append(pending)
            start = self._running < self._writers
            self._running += start
        if start:
            self._pool.submit(self._drain)
        return await pending.answer

    def _drain(self) -> None:
        """A writer: groups written and answered until the queue is empty."""
        ended = False
        try:
            while group := self._take():
                self._write(group)
                by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
                for pending in group:
                    by_loop.setdefault(pending.loop, []).append(pending)
                for loop, answered in by_loop.items():
                    loop.call_soon_threadsafe(_answer, answered)
            ended = True
        finally:
            if not ended:  # an error past the answers (a closed loop): this writer ends all the same
                with self._lock:
                    self._running -= 1

    def _take(self) -> list[_Pending]:
        """The next group; none when the queue is empty, and this writer then counts as ended (under the
        lock that queues, so a batch queued meanwhile is either taken here or starts a writer itself)."""
        with self._lock:
            if not self._queue:
                self._running -= 1
            return [self._queue.popleft() for _ in range(min(GROUP, len(self._queue)))]

    def _write(self, group: list[_Pending]) -> None:
        try:
            written = self._attempts(group)
        except Exception as exc:  # answered to each request, never lost in this thread
            if len(group) > 1:
                for pending in group:
                    self._write([pending])
                return
            group[0].error = exc
            return
        for pending, ok in zip(group, written, strict=True):
            pending.written = ok

    def _attempts(self, group: list[_Pending]) -> list[bool]:
        clusters = [p.message.cluster.cluster() if p.message.cluster is not None else None for p in group]
        recorders = self.judge.recorders([(p.message.batch, c) for p, c in zip(group, clusters, strict=True)])
        deliveries = [Delivery(p.message.batch_id, p.message.batch, p.message.flows, p.source, cluster, record)
                      for p, cluster, record in zip(group, clusters, recorders, strict=True)]
        attempt = 1
        while True:
            try:
                return deliver_batches(self.store, deliveries, known=self.known)
            except (sa.exc.OperationalError, sa.exc.IntegrityError) as exc:
                # a lock or a deadlock: the transaction rolled back whole, and is tried again
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info("retrying a batch write: %s", str(getattr(exc, "orig", exc)).splitlines()[0])
                time.sleep(0.05 * 2**attempt)
                attempt += 1
