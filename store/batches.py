"""Delivering a collector batch exactly once, however often it is retried.

Each batch carries an id chosen when it was cut. It is recorded in ``imports`` (as ``content_hash``,
kind ``collect``; the column that makes re-importing a file a no-op) in the same transaction as
the batch's edges: a batch written just before a crash, then delivered again from the spool, is
recognised and skipped. No new table, so no schema change.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.model.aggregate import Batch
from netpol_gen.model.cluster import Cluster
from netpol_gen.store import schema as t
from netpol_gen.store.db import Store
from netpol_gen.store.writer import write_batch, write_cluster

KIND = "collect"


def deliver_batch(store: Store, batch_id: str, batch: Batch, flows: int, source: str,
                  cluster: Cluster | None = None, then: Callable[[Connection], None] | None = None) -> bool:
    """Write ``batch`` (and ``cluster``, when given) in one transaction; False if it was delivered before.
    ``then`` runs in that transaction after the batch is written (recording its shadow denials)."""
    with store.transaction() as conn:
        known = conn.execute(sa.select(t.imports.c.id).where(t.imports.c.content_hash == batch_id)).first()
        if known is not None:
            return False
        if cluster is not None:
            write_cluster(conn, cluster)
        write_batch(conn, batch)
        if then is not None:
            then(conn)
        conn.execute(sa.insert(t.imports).values(content_hash=batch_id, source=source, kind=KIND, flows=flows,
                                                 imported_at=time.time()))
    return True
