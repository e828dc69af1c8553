"""Start-up: ``netpol-gen --help`` and each command's ``--help`` load the command line, not the library
behind it (the store's SQLAlchemy, the Kubernetes client, scapy, the HTTP client and server, the
evaluator, the synthesizer), and still list every command with its help. Stands in for a user typing
``netpol-gen --help`` on a node, where those imports cost about a second (issue #15); the speed itself
is measured by ``bench/bench_cli.py``, not here."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netpol_gen.cli.main import COMMANDS

# modules that only running a command needs
HEAVY = ("sqlalchemy", "kubernetes", "scapy", "httpx", "uvicorn", "starlette", "psycopg", "pyroute2", "rich",
         "prometheus_client", "yaml", "msgspec", "netpol_gen.evaluator", "netpol_gen.synthesizer", "netpol_gen.store",
         "netpol_gen.ingest", "netpol_gen.collector", "netpol_gen.service", "netpol_gen.review", "netpol_gen.model")

# runs the entry point as the installed script does, then reports what was imported
_PROBE = """
import json, sys
from netpol_gen.cli.main import main
sys.argv = ["netpol-gen", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _help(*args: str) -> tuple[str, int, list[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL)
    report = json.loads(done.stderr.splitlines()[-1])
    return done.stdout, report["code"], report["modules"]


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_help_lists_every_command_without_loading_the_library() -> None:
    out, code, modules = _help("--help")
    assert code == 0
    rows = [line.split(None, 1) for line in out.split("Commands:\n", 1)[1].splitlines()]
    assert [name for name, _ in rows] == list(COMMANDS)
    assert all(summary.strip() for _, summary in rows)  # each with its help
    assert _heavy(modules) == []


@pytest.mark.parametrize("command", [*COMMANDS, "shadow add"])
def test_a_commands_help_loads_only_the_command_line(command: str) -> None:
    out, code, modules = _help(*command.split(), "--help")
    assert code == 0
    assert out.startswith(f"Usage: netpol-gen {command} ")
    assert _heavy(modules) == []


def test_running_a_command_still_loads_what_it_needs(tmp_path: object) -> None:
    """The probe would pass for a CLI that never imports anything: ``prune`` on a missing store must
    reach the store's code (and say so in one line)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, "prune", "--db", "sqlite:////nonexistent/x.db",
                           "--retain", "30d"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] == 2
    assert "sqlalchemy" in report["modules"]


# what importing flows into a SQLite store has no use for: PostgreSQL's dialect and driver, the evaluator
# (no shadow set to judge against), the progress bar's rich (stderr is no terminal), the HTTP client, the
# readers of conntrack/ss dumps and their XML parser (no dump given), the server's token handling, the
# collector's batch delivery, the reader of the store's cluster view (the import judges against its own)
NOT_FOR_A_SQLITE_IMPORT = ("sqlalchemy.dialects.postgresql", "psycopg", "netpol_gen.evaluator", "rich", "httpx",
                           "scapy", "kubernetes", "netpol_gen.ingest.dumps", "xml.etree", "netpol_gen.service.auth",
                           "netpol_gen.store.batches", "netpol_gen.store.cluster_view", "netpol_gen.store.learned")


def test_importing_flows_into_sqlite_loads_only_what_that_needs(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "ticket-booking"
    flows = tmp_path / "flows.jsonl"
    flows.write_text("".join((example / "flows.jsonl").read_text().splitlines(keepends=True)[:5]))
    done = subprocess.run([sys.executable, "-c", _PROBE, "import", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                           "--cluster", str(example / "cluster.yaml"), "--flows", str(flows)],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    assert "edges: " in done.stdout and "sqlalchemy.dialects.sqlite" in report["modules"]
    assert [m for m in report["modules"]
            if any(m == n or m.startswith(n + ".") for n in NOT_FOR_A_SQLITE_IMPORT)] == []


def test_posting_flows_to_a_server_loads_no_store(tmp_path: Path) -> None:
    """Stands in for ``import --server`` on a node: it reads the file and posts it, and needs neither
    SQLAlchemy nor the store's code. The server is unreachable on purpose (nothing listens on port 9):
    all up to the POST has run when it gives up, in one line."""
    example = Path(__file__).parent.parent / "examples" / "ticket-booking"
    done = subprocess.run([sys.executable, "-c", _PROBE, "import", "--server", "http://127.0.0.1:9", "--token", "t",
                           "--retry-for", "0", "--cluster", str(example / "cluster.yaml"),
                           "--flows", str(example / "flows.jsonl")],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] == 2 and "cannot reach the server" in done.stderr
    assert "httpx" in report["modules"] and "netpol_gen.ingest.pipeline" in report["modules"]
    assert [m for m in report["modules"] if m.split(".")[0] == "sqlalchemy" or m.startswith("netpol_gen.store")] == []


# the probe, with a report at exit of what the script left for the interpreter's last collection
_EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("frozen:", gc.get_freeze_count(), "tracked:", len(gc.get_objects()), file=sys.stderr))
from netpol_gen.cli.main import main
sys.argv = ["netpol-gen", *sys.argv[1:]]
main()
"""


def test_the_script_exits_with_its_heap_frozen_and_its_store_closed(tmp_path: Path) -> None:
    """Stands in for a user's one-shot ``netpol-gen import``: the script freezes the heap before the
    interpreter exits (so its last full collection has almost nothing to traverse), and nothing it wrote
    relied on that collection: the SQLite store was closed (no WAL left beside it) and holds the edges."""
    example = Path(__file__).parent.parent / "examples" / "ticket-booking"
    store = tmp_path / "x.db"
    done = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "import", "--db", f"sqlite:///{store}", "--cluster",
                           str(example / "cluster.yaml"), "--flows", str(example / "flows.jsonl")],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    frozen, tracked = (int(word) for word in done.stderr.split()[1::2])
    assert frozen > 10_000 and tracked < frozen / 10
    assert not (tmp_path / "x.db-wal").exists()
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM edges").fetchone()[0] > 0
