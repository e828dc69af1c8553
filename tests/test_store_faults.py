"""Stores that cannot be written, races between imports, and store URLs that are mistakes: one line each,
exit 2, nothing half-written.

The faults are real: a store on a tmpfs remounted read-only and an immutable store file (``chattr +i``:
root ignores file modes, not these), a PostgreSQL session that is read-only as on a hot standby, and
two real `netpol-gen import` processes of the same file. The race is forced, not hoped for: the test
holds the store's write lock until both processes are seen waiting for it (on SQLite, asleep in its
busy handler; on PostgreSQL, blocked in pg_stat_activity), then lets them go."""

from __future__ import annotations

import platform
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from netpol_gen.store import schema as t
from netpol_gen.store.db import open_store
from netpol_gen.store.upsert import Prepared
from tests.cli import run_cli
from tests.test_cli_check import installed_command

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
IMPORT_ARGS = ["--cluster", str(EXAMPLE / "cluster.yaml"), "--flows", str(EXAMPLE / "flows.jsonl")]
WAIT_DEADLINE = 30.0
ACCEPTED = "use sqlite:///PATH (sqlite:////ABSOLUTE/PATH) or postgresql+psycopg://user@host/db"


@pytest.mark.parametrize(("url", "what"), [
    ("sqlite://relative.db", f"a SQLite URL names a file, not a host 'relative.db': {ACCEPTED}"),
    ("sqlite://", f"names no store file: {ACCEPTED}"),
    ("sqlite:///:memory:", f"names no store file: {ACCEPTED}"),
    ("not a url", f"not a database URL ({ACCEPTED})"),
    ("mysql://localhost/x", f"unsupported database 'mysql' ({ACCEPTED})"),
])
@pytest.mark.parametrize("command", ["import", "flows"])
def test_a_mistaken_store_url_names_the_accepted_forms(url: str, what: str, command: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # sqlite://relative.db must not create anything, here or elsewhere
    args = IMPORT_ARGS if command == "import" else []
    code, _, err = run_cli(command, "--db", url, *args)
    assert code == 2
    assert err.splitlines() == [f"netpol-gen: error: {url}: {what}"]
    assert list(tmp_path.iterdir()) == []


def _imported(url: str) -> None:
    code, _, err = run_cli("import", "--db", url, "--cluster", str(EXAMPLE / "cluster.yaml"),
                           "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err


def _readers_still_work(url: str) -> None:
    for command in ("flows", "status", "export"):
        code, out, err = run_cli(command, "--db", url)
        assert code == 0, (command, err)
        assert out


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A directory on its own tmpfs, holding a learnt store, then remounted read-only."""
    where = tmp_path / "ro"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        _imported(f"sqlite:///{where / 'store.db'}")
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, check=False)


def test_a_store_on_a_read_only_mount_refuses_writes_in_one_line_and_still_reads(read_only_mount: Path) -> None:
    db = read_only_mount / "store.db"
    before = db.read_bytes()
    code, _, err = run_cli("import", "--db", f"sqlite:///{db}", *IMPORT_ARGS)
    assert (code, err.splitlines()) == (2, [f"netpol-gen: error: store is read-only ({db})"])
    _readers_still_work(f"sqlite:///{db}")  # opened immutable: WAL mode could not create its -shm file
    assert db.read_bytes() == before


@pytest.fixture
def immutable_store(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "store.db"
    _imported(f"sqlite:///{db}")
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        yield db
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_an_immutable_store_file_refuses_writes_in_one_line(immutable_store: Path) -> None:
    before = immutable_store.read_bytes()
    code, _, err = run_cli("import", "--db", f"sqlite:///{immutable_store}", *IMPORT_ARGS)
    assert (code, err.splitlines()) == (2, [f"netpol-gen: error: store is read-only ({immutable_store})"])
    _readers_still_work(f"sqlite:///{immutable_store}")
    assert immutable_store.read_bytes() == before


@pytest.mark.postgres
def test_a_read_only_postgresql_session_refuses_the_import_in_one_line(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a hot standby's read-only transactions")
    _imported(store_url)
    read_only = store_url + "%20-cdefault_transaction_read_only%3Don"
    code, _, err = run_cli("import", "--db", read_only, *IMPORT_ARGS)
    assert code == 2
    shown = sa.engine.make_url(read_only).render_as_string(hide_password=True)
    assert err.splitlines() == [f"netpol-gen: error: store is read-only ({shown})"]
    _readers_still_work(read_only)


# --- two imports of the same file at once --------------------------------------------------------------

_SLEEP_SYSCALLS = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}  # nanosleep, clock_nanosleep


def _sleeping(pid: int) -> bool:
    """Whether process ``pid`` is asleep in (clock_)nanosleep: SQLite's busy handler, waiting for the lock."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in _SLEEP_SYSCALLS[platform.machine()]
    except (OSError, IndexError):
        return False


def _sqlite_blocked(holder: sa.Connection, pids: list[int]) -> bool:
    return all(_sleeping(pid) for pid in pids)


def _postgres_blocked(holder: sa.Connection, _pids: list[int]) -> bool:
    """Whether two sessions wait behind ``holder`` (directly, or behind a session that waits on it)."""
    holder.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # else the first look lasts the transaction
    rows = holder.execute(sa.text("SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity")).all()
    behind = {holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()}
    grew = True
    while grew:
        before = len(behind)
        behind |= {pid for pid, blockers in rows if set(blockers) & behind}
        grew = len(behind) > before
    return len(behind) - 1 >= 2


def _hold_write_lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(sa.text(f"LOCK TABLE {t.imports.name} IN EXCLUSIVE MODE"))  # reads pass, writes wait


def test_two_concurrent_imports_of_one_file_one_wins_the_other_says_so_in_one_line(store_url: str) -> None:
    if store_url.startswith("sqlite") and platform.machine() not in _SLEEP_SYSCALLS:
        pytest.skip(f"no known sleep system calls for {platform.machine()}")
    _imported(store_url)  # an existing store: opening it writes nothing
    engine = sa.create_engine(store_url, isolation_level="AUTOCOMMIT" if store_url.startswith("sqlite") else None)
    blocked = _sqlite_blocked if store_url.startswith("sqlite") else _postgres_blocked
    with engine.connect() as holder:
        if holder.dialect.name == "postgresql":
            holder.begin()
        _hold_write_lock(holder)
        procs = [subprocess.Popen([installed_command(), "import", "--db", store_url, *IMPORT_ARGS],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            end = time.monotonic() + WAIT_DEADLINE
            while not blocked(holder, [p.pid for p in procs]):
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                assert time.monotonic() < end, "the imports never reached the store's write lock"
                time.sleep(0.01)  # polling interval, not synchronisation
        except BaseException:
            for proc in procs:
                proc.kill()
                proc.wait()
            raise
        finally:
            if holder.dialect.name == "sqlite":
                holder.exec_driver_sql("ROLLBACK")
            else:
                holder.rollback()
    engine.dispose()
    outcomes = sorted((p.wait(60), *p.communicate()) for p in procs)
    (won, won_out, _), (lost, _, lost_err) = outcomes
    assert (won, lost) == (0, 2), outcomes
    assert "sources imported: 1" in won_out
    assert lost_err.splitlines() == [
        f"netpol-gen: error: {EXAMPLE / 'flows.jsonl'}: already being imported by another process; nothing "
        "written by this run (run it again: what that process imported is skipped)"]
    again = run_cli("import", "--db", store_url, *IMPORT_ARGS)
    assert again.exit_code == 0 and "already in the store" in again.stdout


def test_a_store_locked_longer_than_the_busy_timeout_is_one_line(tmp_path: Path) -> None:
    # a store whose write lock another program holds longer than SQLite's busy timeout (5 s)
    db = tmp_path / "store.db"
    _imported(f"sqlite:///{db}")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        code, _, err = run_cli("import", "--db", f"sqlite:///{db}", *IMPORT_ARGS)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 2
    assert err.splitlines() == [f"netpol-gen: error: {db}: store busy: another process held its write lock too "
                                "long; nothing written, try again"]


def test_a_refused_bulk_upsert_is_sqlalchemys_error_and_writes_nothing(store_url: str) -> None:
    """The bulk path (COPY, then the upsert on the driver's cursor) raises what SQLAlchemy raises, so serve
    retries a deadlock (OperationalError) and answers 422 to a refused batch instead of a 500."""
    if not store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: the COPY path")
    store = open_store(store_url)
    columns = ("src_id", "dst_id", "dst_port", "protocol", "connections")
    upsert = Prepared(t.edges, columns, columns[:4], returning=("id",))
    try:
        with pytest.raises(sa.exc.IntegrityError, match="foreign key"), store.transaction() as conn:
            upsert.run(conn, [(1000 + n, 2000 + n, 80, "TCP", 1) for n in range(64)])  # no such identities
        with store.reading() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t.edges)).scalar_one() == 0
    finally:
        store.close()
