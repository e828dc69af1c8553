"""``serve --retain``: retention (:func:`netpol_gen.store.retention.prune`) run every few minutes in a
thread of its own, each step its own short transaction, so ingest waits at most one step. Every
replica may run it: the steps lock their watermark row and do nothing a second time."""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

from netpol_gen.store.db import Store
from netpol_gen.store.retention import prune

EVERY = 300.0  # seconds between two passes: a pass then prunes ~5 min of deliveries
log = logging.getLogger("netpol_gen.serve")


class Pruning:
    """A daemon thread running a prune pass now and every ``every`` seconds until :meth:`stop`."""

    def __init__(self, store: Store, retain: float, every: float = EVERY) -> None:
        self._store, self._retain, self._every = store, retain, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netpol-gen-prune", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = prune(self._store, self._retain, time.time())
                if report.batches or report.denials:
                    log.info("retention: %d batch ids summed, %d shadow denial rows merged into days",
                             report.batches, report.denials)
            except sa.exc.SQLAlchemyError as exc:  # the store busy or away: the next pass tries again
                log.warning("retention pass failed: %s", str(getattr(exc, "orig", exc)).splitlines()[0])
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
