"""Running ``netpol-gen serve``'s app for tests: uvicorn on 127.0.0.1 in a thread, real HTTP.

Readiness is polled on /readyz with a deadline (never a fixed sleep); a server can be stopped and
started again on the same port, as a restarted pod would be. ``Serve`` runs the real command as its
own process instead (a pod, or one of several replicas).
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

TOKEN = "test-token-0123456789"
READY_DEADLINE = 10.0
NETPOL = str(Path(sys.executable).parent / "netpol-gen")
PROCESS_DEADLINE = 30.0  # seconds for a serve process to become ready or to stop: never waited out when well


def wait_ready(url: str, deadline: float = READY_DEADLINE, verify: ssl.SSLContext | bool = True) -> None:
    """Poll ``url``/readyz until it answers 200; AssertionError after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < end, f"{url} not ready after {deadline} s"
        time.sleep(0.02)  # polling interval, not synchronisation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ThreadServer:
    app: Starlette
    port: int = 0
    _server: uvicorn.Server | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                     timeout_graceful_shutdown=2))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        wait_ready(self.url)
        return self

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)
        assert not self._thread.is_alive(), "server did not stop"


@dataclass
class Serve:
    """`netpol-gen serve` as its own process on a fixed address, stopped and started like a pod."""

    db: str
    listen: str
    token_file: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self) -> Serve:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([NETPOL, "serve", "--db", self.db, "--listen", self.listen,
                                             "--token-file", str(self.token_file)], stdout=log, stderr=log)
        wait_ready(self.url, PROCESS_DEADLINE)
        return self

    def stop(self) -> None:
        """SIGTERM (a pod's normal stop); asserts exit 0, killing it if it would not stop."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(PROCESS_DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None
        assert code == 0, self.log.read_text()[-2000:]
