"""The revision of the cluster tables: every write of cluster objects stamps a new one (a row of
``netpol_meta``) in its transaction, so a reader holding a view built from the store knows, with one
primary-key read, when another writer (a second ``serve`` replica, ``import``, ``collect --db``) changed it.

Apart from the reader of that view (:mod:`netpol_gen.store.cluster_view`, which loads the learnt-input
queries), so that a writer stamps it without loading them.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.store import schema as t
from netpol_gen.store.upsert import upsert

REVISION_KEY = "cluster_revision"


def stamp_revision(conn: Connection) -> None:
    """Mark the cluster tables changed (called by every write of cluster objects, in its transaction)."""
    upsert(conn, t.meta, [{"key": REVISION_KEY, "value": uuid.uuid4().hex}], ["key"], lambda ex: {"value": ex.value})


def cluster_revision(conn: Connection) -> str | None:
    """The revision of the cluster tables; None in a store written before revisions were stamped."""
    found: str | None = conn.execute(sa.select(t.meta.c.value).where(t.meta.c.key == REVISION_KEY)).scalar()
    return found
