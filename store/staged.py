"""PostgreSQL's bulk path for an upsert: COPY the rows into a temporary staging table, then one
set-based ``INSERT .. SELECT .. ORDER BY key ON CONFLICT`` into the table.

A batch's edges, identities and samples are thousands of rows per group of batches. Sent as
executemany, each row is a statement the server plans and runs, and the driver and SQLAlchemy
handle its parameters one by one; COPY streams them in one round trip and the upsert runs once,
taking the row locks in key order (so concurrent ``serve`` replicas cannot deadlock). The staging
tables live per connection (``ON COMMIT DELETE ROWS``) and are emptied after each use, since one
transaction may upsert the same table twice (identities for the cluster view, then for the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

MIN_ROWS = 32  # below this, executemany is as quick and needs no staging table


def applies(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> bool:
    """Whether to stage: PostgreSQL, enough rows, no JSON column (COPY would need an adapter per
    column), and each key once (one INSERT cannot update a row twice)."""
    if conn.dialect.name != "postgresql" or len(rows) < MIN_ROWS:
        return False
    if any(isinstance(column.type, sa.JSON) for column in table.columns):
        return False
    return len({tuple(row[k] for k in keys) for row in rows}) == len(rows)


def _stage(conn: Connection, table: sa.Table, columns: Sequence[str]) -> sa.Table:
    name = f"netpol_stage_{table.name}"
    listed = ", ".join(f'"{c}"' for c in columns)
    conn.exec_driver_sql(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS '
                         f'SELECT {listed} FROM "{table.name}" WITH NO DATA')
    return sa.Table(name, sa.MetaData(), *(sa.Column(c, table.c[c].type) for c in columns))


def upsert_staged(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                  updates: Callable[[Any], Mapping[str, Any]] | None,
                  returning: Sequence[sa.ColumnElement[Any]]) -> Sequence[sa.Row[Any]]:
    """The upsert of ``rows`` through COPY and one ``INSERT .. SELECT``; ``returning`` as in upsert."""
    columns = list(rows[0])
    return copy_upsert(conn, table, columns, [[row[c] for c in columns] for row in rows], keys, updates, returning)


def copy_upsert(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                keys: Sequence[str], updates: Callable[[Any], Mapping[str, Any]] | None,
                returning: Sequence[sa.ColumnElement[Any]]) -> Sequence[sa.Row[Any]]:
    """:func:`upsert_staged` of rows given as value sequences in ``columns`` order (no dict per row)."""
    stage = _stage(conn, table, columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        listed = ", ".join(f'"{c}"' for c in columns)
        with cursor.copy(f'COPY "{stage.name}" ({listed}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()
    insert = postgresql.insert(table).from_select(columns, sa.select(*(stage.c[c] for c in columns))
                                                  .order_by(*(stage.c[k] for k in keys)))
    statement = (insert.on_conflict_do_nothing(index_elements=list(keys)) if updates is None
                 else insert.on_conflict_do_update(index_elements=list(keys), set_=dict(updates(insert.excluded))))
    found: Sequence[sa.Row[Any]] = []
    if returning:
        found = conn.execute(statement.returning(*returning)).all()
    else:
        conn.execute(statement)
    conn.exec_driver_sql(f'DELETE FROM "{stage.name}"')
    return found
