"""``INSERT .. ON CONFLICT`` for both engines, executed as one batched statement per table.

SQLite and PostgreSQL spell the upsert identically (``excluded`` is the proposed row); only the
insert construct comes from the dialect. Expressions for merging aggregates that may be NULL
(``least``/``greatest`` do not exist in SQLite, ``min``/``max`` of two values do not exist in
PostgreSQL) are written as CASE so that one statement serves both.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from netpol_gen.store import staged

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

Updates = Callable[[Any], Mapping[str, Any]]  # given ``excluded``, the SET clause
SQLITE_VARIABLES = 32766  # bound parameters per statement (SQLite >= 3.32)


def dialect_insert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The engine's own ``INSERT`` (the one with ``ON CONFLICT``). Its dialect module is imported here,
    not at the top: the engine has loaded it already, and a SQLite store then never loads PostgreSQL's
    (about 40 ms CPU of every command's start-up)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql
        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite
    return sqlite.insert(table)


def upsert_statement(
    conn: Connection, table: sa.Table, keys: Sequence[str], updates: Updates | None = None
) -> sa.Insert:
    """``INSERT INTO table``; on a conflict on ``keys``, apply ``updates`` (or keep the stored row)."""
    insert = dialect_insert(conn, table)
    if updates is None:
        return insert.on_conflict_do_nothing(index_elements=list(keys))
    return insert.on_conflict_do_update(index_elements=list(keys), set_=dict(updates(insert.excluded)))


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    updates: Updates | None = None,
    returning: Sequence[sa.ColumnElement[Any]] = (),
) -> Sequence[tuple[Any, ...]]:
    """Upsert ``rows`` as one batched statement (the driver's executemany); with ``returning``, those
    columns of every row written (``rows`` must then hold each key once: they go in multi-row VALUES).

    Rows go in key order: concurrent writers (several collectors' batches on PostgreSQL) then lock
    the rows they share in the same order and cannot deadlock each other."""
    if not rows:
        return []
    if staged.applies(conn, table, rows, keys):
        return staged.upsert_staged(conn, table, rows, keys, updates, returning)
    ordered = _in_key_order(rows, keys)
    statement = upsert_statement(conn, table, keys, updates)
    if not returning:
        conn.execute(statement, ordered)
        return []
    return conn.execute(statement.returning(*returning), ordered).all()


class Prepared:
    """One upsert compiled once per engine kind and run over rows given as tuples in ``columns`` order:
    the path of every row of a collector batch (identities, edges, samples).

    :func:`upsert` hands SQLAlchemy a dict per row, and SQLAlchemy builds and processes each row's
    parameters in Python (about a third of ``serve``'s CPU at 100 batches/s, bench/README.md). Here
    SQLite's driver gets the tuples as they are (``executemany``; a multi-row ``VALUES`` when the
    written rows' columns are returned) and PostgreSQL gets them through COPY
    (:func:`~netpol_gen.store.staged.copy_upsert`, rows locked in key order). Only the SQL is
    SQLAlchemy's, so the statement is the same one :func:`upsert` runs."""

    def __init__(self, table: sa.Table, columns: Sequence[str], keys: Sequence[str], updates: Updates | None = None,
                 returning: Sequence[str] = ()) -> None:
        self.table, self.columns, self.keys = table, tuple(columns), tuple(keys)
        self.updates, self.returning = updates, tuple(returning)
        self._key = operator.itemgetter(*(self.columns.index(k) for k in keys))
        self._sqlite: tuple[str, str, str] | None = None  # SQL before, one row of and after VALUES
        self._postgresql_sql: str | None = None

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Upsert ``rows``, each key at most once; the ``returning`` columns of every row written."""
        if not rows:
            return []
        if conn.dialect.name == "postgresql":
            return self._postgresql(conn, rows)
        head, values, tail = self._sqlite_sql(conn)
        if not self.returning:
            conn.exec_driver_sql(head + values + tail, list(rows))
            return []
        # Statements of a power of two of rows each: the driver caches a compiled statement per SQL text,
        # so a few sizes are compiled once and reused (one size per row count would fill the cache).
        found: list[tuple[Any, ...]] = []
        largest = 1 << ((SQLITE_VARIABLES // len(self.columns)).bit_length() - 1)
        start = 0
        while start < len(rows):
            size = min(largest, 1 << ((len(rows) - start).bit_length() - 1))
            chunk = rows[start:start + size]
            sql = head + ", ".join([values] * size) + tail
            found.extend(map(tuple, conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk))).all()))
            start += size
        return found

    def _statement(self, conn: Connection) -> sa.Insert:
        statement = upsert_statement(conn, self.table, self.keys, self.updates).values(
            {c: sa.bindparam(c) for c in self.columns})
        return statement.returning(*(self.table.c[c] for c in self.returning)) if self.returning else statement

    def _sqlite_sql(self, conn: Connection) -> tuple[str, str, str]:
        if self._sqlite is None:
            compiled = self._statement(conn).compile(dialect=conn.dialect)
            if tuple(compiled.positiontup or ()) != self.columns:  # a bound value in the SET clause
                raise ValueError(f"upsert of {self.table.name}: parameters {compiled.positiontup} are not its columns")
            values = "(" + ", ".join("?" * len(self.columns)) + ")"
            head, found, tail = str(compiled).partition(values)
            if not found:
                raise ValueError(f"upsert of {self.table.name}: no {values} in {compiled}")
            self._sqlite = (head, values, tail)
        return self._sqlite

    def _postgresql(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        returning = [self.table.c[c] for c in self.returning]
        if len(rows) >= staged.MIN_ROWS:
            if self._postgresql_sql is None:
                self._postgresql_sql = staged.upsert_sql(self.table, self.columns, self.keys, self.updates, returning)
            return staged.copy_upsert(conn, self.table, self.columns, rows, self._postgresql_sql)
        dicts = [dict(zip(self.columns, row, strict=True)) for row in rows]
        return [tuple(row) for row in upsert(conn, self.table, dicts, self.keys, self.updates, returning)]


def _in_key_order(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[Mapping[str, Any]]:
    """``rows`` sorted by ``keys``; the plain comparison (keys are NOT NULL columns) unless a key is None."""
    try:
        return sorted(rows, key=operator.itemgetter(*keys))
    except TypeError:
        return sorted(rows, key=lambda row: tuple(_sortable(row[k]) for k in keys))


def _sortable(value: Any) -> tuple[bool, Any]:
    """A sort key that puts NULLs first and never compares None with a value."""
    return (value is not None, value if value is not None else 0)


def least(stored: Any, new: Any) -> ColumnElement[Any]:
    """The smaller of two nullable values; NULL only when both are."""
    return sa.case((stored.is_(None), new), (new.is_(None), stored), (new < stored, new), else_=stored)


def greatest(stored: Any, new: Any) -> ColumnElement[Any]:
    """The larger of two nullable values; NULL only when both are."""
    return sa.case((stored.is_(None), new), (new.is_(None), stored), (new > stored, new), else_=stored)


def add_nullable(stored: Any, new: Any) -> ColumnElement[Any]:
    """Sum of two nullable counters; NULL (unknown) only when both are."""
    return sa.case((stored.is_(None), new), (new.is_(None), stored), else_=stored + new)
