"""Talking to ``netpol-gen serve``: collectors post batches, the CLI reads what the store learnt.

Every request has a timeout and is retried with capped, jittered exponential backoff while the
server is unreachable or answers 408/429/5xx, for at most ``Retry.deadline`` seconds. Retrying a
POST is safe because the server records each batch id once: a batch whose answer was lost is
recognised, not counted twice. Any other 4xx (bad token, a batch the server cannot take) is never
retried: it is raised at once, and :data:`REJECTS_BATCH` tells a collector when the batch itself is
at fault (to be set aside, not spooled for a retry that would be refused forever).

``https://`` servers are verified against the system's CA bundle (or ``$SSL_CERT_FILE``), or against
``ca_file`` alone when given, e.g. the CA of ``serve --tls-cert`` mounted from a Secret.
"""

from __future__ import annotations

import gzip
import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from netpol_gen import __version__
from netpol_gen.errors import InputError
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.bounds import AddressText
from netpol_gen.model.cluster import Cluster, Service
from netpol_gen.model.dns import DnsAnswerSeen
from netpol_gen.model.flows import Flow
from netpol_gen.model.learned import LearnedInputs
from netpol_gen.model.listings import Deliveries, EdgeRow
from netpol_gen.names import ENV_TOKEN
from netpol_gen.service.wire import KEEPALIVE_EXPIRY, BatchMessage, ClusterView, encode, read

ENV_SERVER = "NETPOL_GEN_SERVER"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
# the request itself is refused (malformed, out of range, too large): sending it again cannot help,
# whereas 401/403/404 say the credentials or the address are wrong, not the batch
REJECTS_BATCH = frozenset({400, 413, 415, 422})


class ServerError(InputError):
    """The server refused a request (``permanent``) or could not be reached in time (retry later)."""

    def __init__(self, what: str, *, where: str | None = None, permanent: bool = False,
                 status: int | None = None) -> None:
        super().__init__(what, where=where)
        self.permanent = permanent
        self.status = status  # the HTTP status of a refusal; None when the server was not reached

    @property
    def rejects_batch(self) -> bool:
        return self.status in REJECTS_BATCH


@dataclass(frozen=True)
class Retry:
    deadline: float = 30.0  # seconds from the first attempt after which a request gives up
    base: float = 0.2  # first backoff; doubles per attempt
    cap: float = 5.0  # longest single wait


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0


def _refusal(response: httpx.Response) -> str:
    detail = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
    if response.status_code == 401:
        return f"server refused the token ({detail}); pass --token or set ${ENV_TOKEN}"
    return f"server answered {response.status_code}: {detail}"


def pooled() -> httpx.Limits:
    """httpx's connection pool for clients of serve: idle connections dropped after :data:`KEEPALIVE_EXPIRY`."""
    return httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)


def trusted(ca_file: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies servers with: only ``ca_file``'s CAs, or (None) the defaults."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:  # before OSError, which it is a kind of
        raise InputError(f"not a PEM certificate: {exc.reason or exc}", where=ca_file) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=ca_file) from None


class StoreClient:
    """One connection pool to one server; ``sleep`` and ``clock`` are injectable for tests and benches."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0, retry: Retry | None = None,
                 ca_file: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or Retry()
        self.stats = ClientStats()
        self._sleep, self._clock = sleep, clock
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"netpol-gen/{__version__}"}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=trusted(ca_file), limits=pooled(),
                                  headers=headers)

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of the first attempt that is not a transient failure."""
        deadline = self._clock() + self.retry.deadline
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem, wait = f"cannot reach the server: {exc or type(exc).__name__}", 0.0
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRYABLE:
                    raise ServerError(_refusal(response), where=self.url + path, permanent=True,
                                      status=response.status_code)
                problem = _refusal(response)
                wait = float(response.headers.get("retry-after", "0") or 0) if response.headers.get(
                    "retry-after", "").isdigit() else 0.0
            delay = min(self.retry.cap, max(wait, self.retry.base * 2**attempt))
            delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: collectors do not retry in step
            if self._clock() + delay > deadline:
                raise ServerError(f"{problem} (gave up after {attempt + 1} attempts)", where=self.url + path)
            attempt += 1
            self.stats.retries += 1
            self._sleep(delay)

    def post(self, message: BatchMessage) -> bool:
        """Deliver ``message``; True when the server wrote it, False when it had it already."""
        body = gzip.compress(json.dumps(encode(message), separators=(",", ":")).encode(), compresslevel=5)
        response = self.request("POST", "/v1/batches", content=body, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})
        return bool(response.json()["written"])

    def _get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params).json()

    def learned(self) -> LearnedInputs:
        return read(LearnedInputs, self._get("/v1/learned"))

    def edges(self, namespace: str | None = None) -> list[EdgeRow]:
        return read(list[EdgeRow], self._get("/v1/edges", **({"namespace": namespace} if namespace else {})))

    def deliveries(self) -> Deliveries:
        return read(Deliveries, self._get("/v1/deliveries"))

    def services(self) -> list[Service]:
        return read(list[Service], self._get("/v1/services"))

    def evidence(self) -> list[Flow]:
        return read(list[Flow], self._get("/v1/evidence"))

    def dns_answers(self) -> list[DnsAnswerSeen]:
        return read(list[DnsAnswerSeen], self._get("/v1/dns"))

    def api_servers(self) -> list[str]:
        return read(list[AddressText], self._get("/v1/api-servers"))


def post_batch(url: str, token: str, batch: Batch, batch_id: str, *, flows: int = 0, source: str = "",
               cluster: Cluster | None = None, retry: Retry | None = None, timeout: float = 10.0,
               ca_file: str | None = None) -> bool:
    """Deliver one batch (with the cluster view it was attributed against, when that changed).

    True when written, False when the server had this batch id already. ServerError with
    ``permanent`` False when the server stayed unreachable for ``retry.deadline``: spool and retry
    the same id later; with ``permanent`` True it will never be accepted (bad token, malformed).
    """
    message = BatchMessage(batch_id, batch, flows, source, ClusterView.of(cluster) if cluster else None)
    with StoreClient(url, token, retry=retry, timeout=timeout, ca_file=ca_file) as client:
        return client.post(message)
