"""Opening a store: SQLite (default, WAL mode) or PostgreSQL, with a checked schema version.

A store that cannot be reached or was written by another schema version is bad input, reported in
one line: silently migrating or writing into a schema we do not understand would corrupt learnt
traffic that took days to collect.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from netpol_gen.errors import InputError
from netpol_gen.names import ENV_URL
from netpol_gen.store.schema import ADDED_TABLES, SCHEMA_VERSION, meta, metadata

DEFAULT_URL = "sqlite:///netpol-gen.db"


ACCEPTED_URLS = "sqlite:///PATH (sqlite:////ABSOLUTE/PATH) or postgresql+psycopg://user@host/db"


class StoreError(InputError):
    """A store URL that cannot be opened, or a database holding another schema version."""


class ReadOnlyStore(StoreError):
    """A write to a store on a read-only file, directory, mount or database (e.g. a hot standby)."""

    def __init__(self, shown: str) -> None:
        super().__init__(f"store is read-only ({shown})")


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

    def refusal(self, exc: sa.exc.DBAPIError) -> StoreError | None:
        """The one-line error for a write the database refused for good (read-only) or after waiting too
        long for another writer; None for other failures. For commands: the server retries these."""
        sqlite = self.engine.dialect.name == "sqlite"
        where = str(self.engine.url.database) if sqlite else self.url
        if _read_only(exc):
            return ReadOnlyStore(where)
        if sqlite and "database is locked" in str(exc.orig):
            return StoreError("store busy: another process held its write lock too long; nothing written, "
                              "try again", where=where)
        return None

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def _read_only(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database refused a write because it is read-only (SQLite: a read-only file, directory
    or mount; PostgreSQL: a read-only transaction, e.g. on a standby)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "25006" or "readonly database" in str(exc.orig)


def _writable(path: str) -> bool:
    """Whether SQLite can write the store at ``path``: the file, and its directory (WAL mode creates the
    -wal and -shm files beside it). os.access answers for root too on read-only mounts and immutable files."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.access(directory, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))


def _sqlite_url(parsed: sa.URL, url: str, reading: bool) -> sa.URL:
    """The checked SQLite URL; for a reader of a store nobody can write, an immutable read-only one.

    ``sqlite://relative.db`` (two slashes) parses as a *host*, ``sqlite://`` as an in-memory database
    that vanishes at exit: both are mistakes. A store on a read-only mount cannot even be read the usual
    way (WAL mode wants to create its -shm file), but nothing can change it either, so readers open it
    immutable; a -wal file left beside it holds commits, and then the usual way works."""
    if parsed.host or parsed.username or parsed.port:
        raise StoreError(f"a SQLite URL names a file, not a host {parsed.host!r}: use {ACCEPTED_URLS}",
                         where=url)
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:"):
        raise StoreError(f"names no store file: use {ACCEPTED_URLS}", where=url)
    if not reading or _writable(path) or not os.path.exists(path) or os.path.exists(f"{path}-wal"):
        return parsed
    quoted = urllib.parse.quote(os.path.abspath(path))
    return parsed.set(database=f"file:{quoted}", query={"mode": "ro", "immutable": "1", "uri": "true"})


def _make_engine(url: str, reading: bool = False) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"not a database URL (use {ACCEPTED_URLS})", where=url) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {parsed.get_backend_name()!r} (use {ACCEPTED_URLS})",
            where=parsed.render_as_string(hide_password=True),
        )
    if parsed.get_backend_name() == "sqlite":
        parsed = _sqlite_url(parsed, url, reading)
    try:
        engine = sa.create_engine(parsed)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"no driver for this URL ({_first_line(exc)}; use postgresql+psycopg://...)",
                         where=parsed.render_as_string(hide_password=True)) from None
    if engine.dialect.name == "sqlite" and "immutable" not in parsed.query:
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
    engine = _make_engine(url, reading=not create)
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    database = sa.engine.make_url(url).database if engine.dialect.name == "sqlite" else None
    if not create and database and not os.path.exists(database):
        raise StoreError("no store here (run netpol-gen import first)", where=shown)
    if create and database and not _writable(database):
        engine.dispose()
        raise ReadOnlyStore(database)
    try:
        with engine.begin() as conn:
            if not _check_version(conn, shown):
                if not create:
                    raise StoreError("no store here (run netpol-gen import first)", where=shown)
                metadata.create_all(conn)
                conn.execute(sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif create:  # tables added since (shadow sets): created where missing, the rest untouched
                metadata.create_all(conn, tables=ADDED_TABLES)
    except StoreError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        if isinstance(exc, sa.exc.DBAPIError) and _read_only(exc):
            raise ReadOnlyStore(database or shown) from None
        raise StoreError(f"cannot open store: {_first_line(exc)}", where=shown) from None
    return Store(engine, shown)
