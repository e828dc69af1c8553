"""`netpol-gen serve` as Kubernetes runs it: HTTPS with a certificate from a Secret, and SIGTERM.

The real command runs in a subprocess with a self-signed certificate made here by the `openssl` CLI
(for 127.0.0.1, as the store Service's DNS name would be in a cluster); the real client verifies it
with `--ca-file` (the collector's delivery) or `$SSL_CERT_FILE` (the reading commands). SIGTERM is
sent while a batch is in flight, held up by a write lock the test takes on the SQLite store: the
batch must still be answered and written, and the process exit 0."""

from __future__ import annotations

import platform
import signal
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from netpol_gen.collector.capture_targets import DeliveryError, ServerTarget
from netpol_gen.service.client import Retry, ServerError, post_batch
from netpol_gen.store import schema as t
from tests.cli import run_cli
from tests.serving import TOKEN, free_port, wait_ready
from tests.test_cli_check import installed_command
from tests.test_serve import _batch
from tests.test_store_faults import _SLEEP_SYSCALLS, _sleeping

QUICK = Retry(deadline=0.5, base=0.05, cap=0.1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "tls.crt", where / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=netpol-gen-store", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    db: Path

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


def _serve(tmp_path: Path, *extra: str, scheme: str = "http", verify: ssl.SSLContext | bool = True) -> Served:
    (tmp_path / "token").write_text(TOKEN + "\n")
    port, db = free_port(), tmp_path / "store.db"
    process = subprocess.Popen([installed_command(), "serve", "--db", f"sqlite:///{db}", "--listen",
                                f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"), *extra],
                               stderr=subprocess.PIPE, text=True)
    served = Served(process, f"{scheme}://127.0.0.1:{port}", db)
    try:
        wait_ready(served.url, verify=verify)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return served


@pytest.fixture
def tls_server(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[Served]:
    cert, key = certificate
    served = _serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                    verify=ssl.create_default_context(cafile=str(cert)))
    yield served
    if served.process.poll() is None:
        served.process.kill()
        served.process.communicate()


def test_batches_and_reads_go_over_verified_tls(tls_server: Served, certificate: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _ = certificate
    target = ServerTarget(tls_server.url, lambda: TOKEN, "collector", retry=QUICK, ca_file=str(cert))
    assert target.write("b1", _batch([("web", "api", 80)]), 1, None)  # the collector's delivery
    assert post_batch(tls_server.url, TOKEN, _batch([("web", "db", 5432)]), "b2", retry=QUICK, ca_file=str(cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the reading commands trust what the system would
    code, out, err = run_cli("flows", "--server", tls_server.url, "--token", TOKEN, "--format", "csv")
    assert code == 0, err
    assert "shop/Deployment/web,shop/Deployment/api,80,TCP,1" in out and ",5432,TCP," in out
    code, err = tls_server.terminate()
    assert code == 0, err
    assert f"on {tls_server.url}" in err


def test_a_client_that_does_not_trust_the_certificate_sends_nothing(tls_server: Served) -> None:
    # the system CAs do not know our self-signed certificate: the token must not be sent
    with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
        post_batch(tls_server.url, TOKEN, _batch([("web", "api", 80)]), "b1", retry=QUICK)
    target = ServerTarget(tls_server.url, lambda: TOKEN, "collector", retry=QUICK)
    with pytest.raises(DeliveryError) as caught:
        target.write("b1", _batch([("web", "api", 80)]), 1, None)
    assert not caught.value.rejected  # spooled, for when the CA is fixed: the batch is not at fault
    plain = tls_server.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):  # no clear-text fallback on the TLS port
        httpx.get(f"{plain}/readyz", timeout=5)
    code, err = tls_server.terminate()
    assert code == 0, err
    with sqlite3.connect(tls_server.db) as conn:
        assert conn.execute(f"SELECT count(*) FROM {t.edges.name}").fetchone() == (0,)


def test_bad_tls_files_are_one_line_errors(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    (tmp_path / "token").write_text(TOKEN + "\n")
    common = ["serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--token-file", str(tmp_path / "token")]
    code, _, err = run_cli(*common, "--tls-cert", str(cert))
    assert code == 2 and "--tls-cert and --tls-key go together" in err
    code, _, err = run_cli(*common, "--tls-cert", str(key), "--tls-key", str(cert))  # swapped
    assert code == 2 and len(err.splitlines()) == 1 and "not a certificate and its private key" in err
    code, _, err = run_cli(*common, "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(key))
    assert (code, err.splitlines()) == (2, [f"netpol-gen: error: {tmp_path / 'missing.crt'}: cannot read: "
                                            "No such file or directory"])
    code, _, err = run_cli("collect", "--server", "https://127.0.0.1:1", "--token", TOKEN, "--cluster",
                           str(Path(__file__).parent / "data" / "store-cluster-t1.yaml"), "--ca-file", str(key))
    assert code == 2 and len(err.splitlines()) == 1 and f"{key}: not a PEM certificate" in err


def _in_flight(pid: int) -> bool:
    """Whether a thread of the server is asleep in SQLite's busy handler: a write waiting for our lock."""
    return any(_sleeping_task(pid, task.name) for task in Path(f"/proc/{pid}/task").iterdir())


def _sleeping_task(pid: int, tid: str) -> bool:
    try:
        first = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return first in _SLEEP_SYSCALLS[platform.machine()]


@pytest.mark.skipif(platform.machine() not in _SLEEP_SYSCALLS, reason="sleep system calls unknown here")
def test_sigterm_drains_the_batch_in_flight_then_exits_0(tmp_path: Path) -> None:
    served = _serve(tmp_path)
    assert _sleeping(served.process.pid) is False  # the main thread waits in epoll, not asleep
    lock = sqlite3.connect(served.db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    answers: list[bool] = []
    poster = threading.Thread(target=lambda: answers.append(
        post_batch(served.url, TOKEN, _batch([("web", "api", 80)]), "in-flight", retry=QUICK, timeout=60)))
    try:
        poster.start()
        wait_until(lambda: _in_flight(served.process.pid))
        served.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "Shutting down" in _peek_log(served))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    poster.join(60)
    code, err = served.terminate()
    assert answers == [True] and code == 0, err
    engine = sa.create_engine(f"sqlite:///{served.db}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.edges.c.connections)).scalars().all() == [1]
    engine.dispose()


_LOG: dict[int, str] = {}


def _peek_log(served: Served) -> str:
    """What the server logged so far (its stderr is read line by line into a buffer)."""
    assert served.process.stderr is not None
    line = served.process.stderr.readline()
    _LOG[served.process.pid] = _LOG.get(served.process.pid, "") + line
    return _LOG[served.process.pid]


def wait_until(condition: Callable[[], bool], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)  # polling interval, not synchronisation
