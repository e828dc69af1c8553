"""Opening the store: creation, schema version checks, unreachable databases, SQLite WAL mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from netpol_gen.store import schema as t
from netpol_gen.store.db import StoreError, open_store


def set_schema_version(url: str, version: int) -> None:
    store = open_store(url)
    try:
        with store.transaction() as conn:
            conn.execute(sa.update(t.meta).where(t.meta.c.key == "schema_version").values(value=str(version)))
    finally:
        store.close()


def test_new_store_records_the_schema_version(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.reading() as conn:
            version = conn.execute(sa.select(t.meta.c.value).where(t.meta.c.key == "schema_version")).scalar_one()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        store.close()
    assert int(version) == t.SCHEMA_VERSION
    assert tables == set(t.metadata.tables)


@pytest.mark.parametrize(("version", "hint"), [(t.SCHEMA_VERSION + 1, "upgrade netpol-gen"),
                                               (t.SCHEMA_VERSION - 1, "re-import into a new store")])
def test_other_schema_version_is_refused_in_one_line(store_url: str, version: int, hint: str) -> None:
    set_schema_version(store_url, version)
    with pytest.raises(StoreError) as caught:
        open_store(store_url)
    message = caught.value.message
    assert f"store has schema version {version}, this netpol-gen uses version {t.SCHEMA_VERSION}" in message
    assert message.endswith(hint) and "\n" not in message


def test_database_of_something_else_is_not_taken_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER)"))
    engine.dispose()
    with pytest.raises(StoreError, match="not a netpol-gen store"):
        open_store(url)


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/test",
    "sqlite:////nonexistent-dir/netpol-gen.db",
    "mysql://localhost/x",
    "postgresql+asyncpg://postgres@127.0.0.1/test",
    "not a url",
])
def test_unusable_url_is_a_one_line_store_error(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert "\n" not in caught.value.message


def test_password_is_not_shown_in_messages() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in caught.value.message and "***" in caught.value.message


def test_reading_a_missing_store_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no store here"):
        open_store(f"sqlite:///{path}", create=False)
    assert not path.exists()


def test_sqlite_store_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with store.reading() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
    finally:
        store.close()
