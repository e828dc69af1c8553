"""PostgreSQL's bulk path for an upsert: COPY the rows into a temporary staging table, then one
set-based ``INSERT .. SELECT .. ORDER BY key ON CONFLICT`` into the table.

A batch's edges, identities and samples are thousands of rows per group of batches. Sent as
executemany, each row is a statement the server plans and runs, and the driver and SQLAlchemy
handle its parameters one by one; COPY streams them in one round trip and the upsert runs once,
taking the row locks in key order (so concurrent ``serve`` replicas cannot deadlock). The staging
tables live per connection (created once, ``ON COMMIT DELETE ROWS``) and the upsert empties them as it
reads them, since one transaction may upsert the same table twice (identities for the cluster view,
then for the batch).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

MIN_ROWS = 32  # below this, executemany is as quick and needs no staging table
_STAGES = "netpol_stages"  # in a connection's info: the staging tables it created


def applies(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> bool:
    """Whether to stage: PostgreSQL, enough rows, no JSON column (COPY would need an adapter per
    column), and each key once (one INSERT cannot update a row twice)."""
    if conn.dialect.name != "postgresql" or len(rows) < MIN_ROWS:
        return False
    if any(isinstance(column.type, sa.JSON) for column in table.columns):
        return False
    return len({tuple(row[k] for k in keys) for row in rows}) == len(rows)


def _stage_name(table: sa.Table, columns: Sequence[str]) -> str:
    return f"netpol_stage_{table.name}_{zlib.crc32(','.join(columns).encode()):08x}"


def _forget_stages(conn: Connection) -> None:
    """A rolled back transaction takes the staging tables it created with it."""
    conn.connection.info.pop(_STAGES, None)


def _stage(conn: Connection, table: sa.Table, columns: Sequence[str]) -> str:
    """The name of ``table``'s staging table for ``columns``, created on this connection's first use
    (and again after a rollback, which may have undone the creation)."""
    name = _stage_name(table, columns)
    created: set[str] = conn.connection.info.setdefault(_STAGES, set())
    if name not in created:
        if not event.contains(conn.engine, "rollback", _forget_stages):
            event.listen(conn.engine, "rollback", _forget_stages)
        listed = ", ".join(f'"{c}"' for c in columns)
        conn.exec_driver_sql(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS '
                             f'SELECT {listed} FROM "{table.name}" WITH NO DATA')
        created.add(name)
    return name


def upsert_sql(table: sa.Table, columns: Sequence[str], keys: Sequence[str],
               updates: Callable[[Any], Mapping[str, Any]] | None, returning: Sequence[sa.ColumnElement[Any]]) -> str:
    """The statement that moves the staged rows into ``table``: the staging table emptied
    (``DELETE .. RETURNING`` in a CTE, one round trip) and its rows upserted in key order."""
    from sqlalchemy.dialects import postgresql  # here: a SQLite store never loads PostgreSQL's dialect

    stage = sa.table(_stage_name(table, columns), *(sa.column(c) for c in columns))
    staged = sa.delete(stage).returning(*stage.c).cte("staged")
    insert = postgresql.insert(table).from_select(list(columns), sa.select(*(staged.c[c] for c in columns))
                                                  .order_by(*(staged.c[k] for k in keys)))
    statement = (insert.on_conflict_do_nothing(index_elements=list(keys)) if updates is None
                 else insert.on_conflict_do_update(index_elements=list(keys), set_=dict(updates(insert.excluded))))
    compiled = statement.returning(*returning) if returning else statement
    return str(compiled.compile(dialect=postgresql.dialect()))


def upsert_staged(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                  updates: Callable[[Any], Mapping[str, Any]] | None,
                  returning: Sequence[sa.ColumnElement[Any]]) -> Sequence[tuple[Any, ...]]:
    """The upsert of ``rows`` through COPY and one ``INSERT .. SELECT``; ``returning`` as in upsert."""
    columns = list(rows[0])
    return copy_upsert(conn, table, columns, [[row[c] for c in columns] for row in rows],
                       upsert_sql(table, columns, keys, updates, returning))


@cache
def _copy_types(table: sa.Table, columns: tuple[str, ...]) -> list[str]:
    """PostgreSQL's names of the columns' types (``varchar(45)`` -> ``varchar``), for a binary COPY."""
    from sqlalchemy.dialects import postgresql  # here: a SQLite store never loads PostgreSQL's dialect
    return [table.c[c].type.compile(dialect=postgresql.dialect()).lower().partition("(")[0] for c in columns]


def copy_upsert(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                sql: str) -> list[tuple[Any, ...]]:
    """Rows given as value sequences in ``columns`` order COPYed into the staging table and moved by
    ``sql`` (:func:`upsert_sql`, compiled once by a caller that runs it often); what it returns."""
    stage = _stage(conn, table, columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        listed = ", ".join(f'"{c}"' for c in columns)
        # Binary, with the types given once: the driver packs each value without choosing its adapter
        # (a quarter of the text format's CPU per row here) and the server parses no text.
        with cursor.copy(f'COPY "{stage}" ({listed}) FROM STDIN (FORMAT BINARY)') as copy:
            copy.set_types(_copy_types(table, tuple(columns)))
            for row in rows:
                copy.write_row(row)
        # The driver's cursor again, not SQLAlchemy's result: its rows come out as tuples in one fetchall
        # (SQLAlchemy fetched a Row at a time, a third of this function's Python time for an edge upsert).
        # A refusal is raised as SQLAlchemy would (OperationalError for a deadlock: retried by serve).
        try:
            cursor.execute(sql)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                             dialect=conn.dialect) from exc
        return cursor.fetchall() if cursor.description is not None else []
    finally:
        cursor.close()
