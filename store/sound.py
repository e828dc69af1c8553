"""Rows within the declared bounds, as SQL predicates: what readers of the store keep.

Since the boundaries validate (:mod:`netpol_gen.model.bounds`) nothing out of range is written, but
a store written by an earlier netpol-gen may hold values that then got through: infinite or absurd
timestamps, negative counts, ports out of range. Readers skip such rows instead of crashing on them,
and say once per process how many they skipped, so `flows`, `export`, `status` and `diff --db` keep
working on an old store; importing the same traffic again with this version restores what they were.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from netpol_gen.model.bounds import EARLIEST, INT64_MAX, LATEST_STATIC
from netpol_gen.model.flows import PROTOCOLS
from netpol_gen.store import schema as t

_log = logging.getLogger("netpol_gen.store")
_reported: set[str] = set()


def _time(column: sa.ColumnElement[float], *, nullable: bool = True) -> sa.ColumnElement[bool]:
    inside = column.between(EARLIEST, LATEST_STATIC)
    return sa.or_(column.is_(None), inside) if nullable else inside


def _count(column: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    return sa.or_(column.is_(None), column.between(0, INT64_MAX))


def sound_edge() -> sa.ColumnElement[bool]:
    e = t.edges.c
    return sa.and_(e.connections.between(0, INT64_MAX), _count(e.packets), _count(e.bytes),
                   e.dst_port.between(1, 65535), e.protocol.in_(PROTOCOLS), _time(e.first_seen), _time(e.last_seen))


def sound_sample() -> sa.ColumnElement[bool]:
    s = t.edge_samples.c
    return sa.and_(_time(s.ts), _count(s.packets), _count(s.bytes), s.dst_port.between(1, 65535),
                   sa.or_(s.src_port.is_(None), s.src_port.between(0, 65535)))


def sound_dns_answer() -> sa.ColumnElement[bool]:
    d = t.dns_answers.c
    return sa.and_(_time(d.first_seen, nullable=False), _time(d.last_seen, nullable=False),
                   d.ttl.between(0, 2**31 - 1))


def report_unsound(conn: sa.Connection, table: sa.Table, sound: sa.ColumnElement[bool]) -> None:
    """Warn once per process and table how many rows of ``table`` readers skip."""
    if table.name in _reported:
        return
    _reported.add(table.name)
    skipped = conn.execute(sa.select(sa.func.count()).select_from(table).where(sa.not_(sound))).scalar_one()
    if skipped:
        _log.warning("the store holds %d %s row(s) with out-of-range values (written by an earlier version); "
                     "they are skipped", skipped, table.name)
