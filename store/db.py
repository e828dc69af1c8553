"""Opening a store: SQLite (default, WAL mode) or PostgreSQL, with a checked schema version.

A store that cannot be reached or was written by another schema version is bad input, reported in
one line: silently migrating or writing into a schema we do not understand would corrupt learnt
traffic that took days to collect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from netpol_gen.errors import InputError
from netpol_gen.store.schema import SCHEMA_VERSION, meta, metadata

DEFAULT_URL = "sqlite:///netpol-gen.db"
ENV_URL = "NETPOL_GEN_DB"


class StoreError(InputError):
    """A store URL that cannot be opened, or a database holding another schema version."""


def default_url() -> str:
    """``$NETPOL_GEN_DB``, else a SQLite file in the working directory."""
    return os.environ.get(ENV_URL) or DEFAULT_URL


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets `flows` read while an import or the collector writes; NORMAL is durable at each
    # checkpoint and keeps commits cheap; foreign keys are off by default in SQLite.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Store:
    """An open store; :meth:`transaction` is the only way writes happen (all or nothing)."""

    engine: Engine
    url: str  # for messages, password hidden

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def _make_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError("not a database URL (use sqlite:///PATH or postgresql+psycopg://...)", where=url) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {parsed.get_backend_name()!r} (use sqlite:///PATH or postgresql+psycopg://...)",
            where=parsed.render_as_string(hide_password=True),
        )
    try:
        engine = sa.create_engine(parsed)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"no driver for this URL ({_first_line(exc)}; use postgresql+psycopg://...)",
                         where=parsed.render_as_string(hide_password=True)) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _check_version(conn: Connection, where: str) -> bool:
    """True when the schema is ours and current; False when the database is empty."""
    tables = set(sa.inspect(conn).get_table_names())
    if not tables:
        return False
    if meta.name not in tables:
        raise StoreError("database is not a netpol-gen store (it has other tables)", where=where)
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    found = int(row[0]) if row is not None else 0
    if found != SCHEMA_VERSION:
        hint = "upgrade netpol-gen" if found > SCHEMA_VERSION else "re-import into a new store"
        raise StoreError(
            f"store has schema version {found}, this netpol-gen uses version {SCHEMA_VERSION}; {hint}",
            where=where,
        )
    return True


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open the store at ``url``, creating it when empty (or, without ``create``, refusing to).

    StoreError when it is unreachable, of another schema version, or missing and not to be created.
    """
    url = url or default_url()
    engine = _make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    database = engine.url.database
    if not create and engine.dialect.name == "sqlite" and database and not os.path.exists(database):
        raise StoreError("no store here (run netpol-gen import first)", where=shown)
    try:
        with engine.begin() as conn:
            if not _check_version(conn, shown):
                if not create:
                    raise StoreError("no store here (run netpol-gen import first)", where=shown)
                metadata.create_all(conn)
                conn.execute(sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
    except StoreError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open store: {_first_line(exc)}", where=shown) from None
    return Store(engine, shown)
