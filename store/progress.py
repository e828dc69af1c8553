"""How learning is going, for ``netpol-gen status``: what was delivered to the store and when.

The edges themselves (with their first sighting) come from :func:`netpol_gen.store.query.list_edges`;
this adds the deliveries (collector batches and imported files), so a user can tell "nothing new was
learnt" from "nothing arrived".
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netpol_gen.store import schema as t


@dataclass(frozen=True)
class Deliveries:
    batches: int  # collector batches and imported files
    flows: int
    last: float | None  # when the latest one was written (seconds since the epoch)


def read_deliveries(conn: Connection) -> Deliveries:
    i = t.imports.c
    count, flows, last = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(i.flows), 0), sa.func.max(i.imported_at))
    ).one()
    return Deliveries(int(count), int(flows), None if last is None else float(last))
