"""Running ``netpol-gen serve``'s app for tests: uvicorn on 127.0.0.1 in a thread, real HTTP.

Readiness is polled on /readyz with a deadline (never a fixed sleep); a server can be stopped and
started again on the same port, as a restarted pod would be.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette

TOKEN = "test-token-0123456789"
READY_DEADLINE = 10.0


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
