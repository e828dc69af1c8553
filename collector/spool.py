"""A bounded local SQLite file of batches the store could not take yet, oldest delivered first.

A batch is deleted from the spool only after the store committed it; the store recognises a batch
delivered twice by its id (:mod:`netpol_gen.store.batches`), so a crash between the two commits
repeats nothing. When the spool would exceed its size, the oldest batches are dropped (and counted):
the newest traffic is the most useful when the store has been away for long.

A batch the store *rejected* (HTTP 400/413/415/422: malformed or out of range, never accepted however
often sent) is moved to the ``rejected`` table of the same file with the store's answer, instead of
being retried forever ahead of every later batch: recorded traffic is never silently lost, and an
operator can read it back (``sqlite3 SPOOL 'select batch_id, error from rejected'``). It is bounded
by the same size, oldest dropped first.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from netpol_gen.model.aggregate import Batch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    flows INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    flows INTEGER NOT NULL,
    size INTEGER NOT NULL,
    error TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Spooled:
    batch_id: str
    flows: int
    batch: Batch


class Spool:
    """Batches in a SQLite file of at most ``max_bytes`` of payload; used by one thread at a time."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0  # batches dropped to stay within max_bytes, since opening
        # opened on one thread, then used by the delivery thread only: one user at a time
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA auto_vacuum=FULL")  # give deleted batches' pages back to the disk
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def put(self, batch_id: str, flows: int, batch: Batch) -> None:
        payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR IGNORE INTO spool (batch_id, flows, size, payload) VALUES (?, ?, ?, ?)",
                             (batch_id, flows, len(payload), payload))
            while self.size() > self.max_bytes:
                self._db.execute("DELETE FROM spool WHERE seq = (SELECT min(seq) FROM spool)")
                self.dropped += 1

    def reject(self, batch_id: str, flows: int, batch: Batch, error: str) -> None:
        """Move ``batch_id`` (spooled or not) to the rejected table, with the store's answer."""
        payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM spool WHERE batch_id = ?", (batch_id,))
            self._db.execute("INSERT OR IGNORE INTO rejected (batch_id, flows, size, error, payload) "
                             "VALUES (?, ?, ?, ?, ?)", (batch_id, flows, len(payload), error, payload))
            while self._size("rejected") > self.max_bytes:
                self._db.execute("DELETE FROM rejected WHERE seq = (SELECT min(seq) FROM rejected)")

    def rejected(self) -> list[tuple[str, str]]:
        """(batch id, the store's answer) of the batches set aside, oldest first."""
        return [(row[0], row[1]) for row in self._db.execute("SELECT batch_id, error FROM rejected ORDER BY seq")]

    def oldest(self) -> Iterator[Spooled]:
        """Batches oldest first; each is read when reached, so a long spool is not loaded at once."""
        after = -1
        while True:
            row = self._db.execute("SELECT seq, batch_id, flows, payload FROM spool WHERE seq > ? ORDER BY seq "
                                   "LIMIT 1", (after,)).fetchone()
            if row is None:
                return
            after = row[0]
            yield Spooled(row[1], row[2], pickle.loads(row[3]))  # our own file, written by put()

    def remove(self, batch_id: str) -> None:
        self._db.execute("DELETE FROM spool WHERE batch_id = ?", (batch_id,))

    def size(self) -> int:
        return self._size("spool")

    def _size(self, table: str) -> int:  # table: "spool" or "rejected", never input
        return int(self._db.execute(f"SELECT coalesce(sum(size), 0) FROM {table}").fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def close(self) -> None:
        self._db.close()
