"""``netpol-gen serve``: the central store as a small ASGI app (Starlette, run by uvicorn).

Collectors POST batches to ``/v1/batches``; readers GET what the local learning source
(:class:`~netpol_gen.service.source.LocalSource`) returns, serialised by :mod:`netpol_gen.service.wire`,
and synthesise locally, so remote and local runs share every line of policy logic. No endpoint writes
anything but batches and shadow sets (``/v1/shadow/sets``, write access). The endpoints are
module-level functions; :data:`ROUTES` is the route table.

Every request but the probes needs a bearer token (401 without a valid one, 403 when it may not do
this). Bodies are bounded twice: on the wire (413 once the limit is passed, whatever Content-Length
claims) and after gunzip (a gzip bomb stops at the limit, it is never inflated whole).

Writes are idempotent (the batch id is recorded in the same transaction as the edges) and go through
group commit (:mod:`~netpol_gen.service.group_commit`): the batches queued meanwhile are written in one
transaction, one writer by default on both engines. Any number of ``serve`` replicas may write to one PostgreSQL:
batch ids are claimed in id order with ``INSERT .. ON CONFLICT DO NOTHING``, so a batch posted to two
replicas is written by one and answered "delivered before" by the other (store/batches.py). A
transient database failure (lock, deadlock) is retried there; what remains becomes 503 and the
collector retries the same batch id later. Figures: bench/README.md.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from netpol_gen.errors import InputError
from netpol_gen.model.documents import Document
from netpol_gen.service.auth import Access, Authenticator, Principal
from netpol_gen.service.group_commit import Ingestor
from netpol_gen.service.metrics import render_metrics
from netpol_gen.service.shadow_source import LocalShadow, SetMessage, add_checked
from netpol_gen.service.source import LocalSource
from netpol_gen.service.wire import BatchMessage, WireError, encode, read_batch
from netpol_gen.store.db import Store
from netpol_gen.store.retention import StaleBatch
from netpol_gen.store.shadow import remove_set

log = logging.getLogger("netpol_gen.serve")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    max_body: int = 16 << 20  # bytes as sent (compressed)
    max_decoded: int = 128 << 20  # bytes after gunzip


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"bad gzip body: {exc}") from None
    if len(data) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes once decompressed")
    if not inflater.eof or inflater.unused_data:
        raise HTTPException(400, "bad gzip body: truncated or trailing data")
    return data


async def _body(request: Request, limits: Limits, then: Callable[[bytes], _T]) -> _T:
    """``then`` of the request's body (gunzipped), run in a worker thread: one hop for both."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:
        raise HTTPException(413, f"body larger than {limits.max_body} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body:
            raise HTTPException(413, f"body larger than {limits.max_body} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity"):
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    return await run_in_threadpool(
        lambda: then(_gunzip(body, limits.max_decoded) if encoding == "gzip" else body))


def _parse(body: bytes) -> BatchMessage:
    try:
        return read_batch(body)
    except WireError as exc:
        raise HTTPException(400, exc.message) from None


def _json(value: Any) -> Response:
    return Response(json.dumps(encode(value), separators=(",", ":")), media_type="application/json")


@dataclass
class ServerState:
    """What the endpoints share: the store, who may do what, the body bounds, the write slots, and the
    learning source that answers reads exactly as a local ``--db`` does."""

    store: Store
    authenticator: Authenticator
    limits: Limits
    ingestor: Ingestor
    source: LocalSource


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.netpol_gen
    return state


async def _principal(request: Request, access: Access) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    authenticator = _state(request).authenticator
    found = (await run_in_threadpool(authenticator.authenticate, token.strip()) if authenticator.blocking
             else authenticator.authenticate(token.strip()))
    if found is None:
        raise HTTPException(401, "token refused", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if access not in found.may:
        raise HTTPException(403, f"{found.user} may not {access.value}")
    return found


async def post_batch(request: Request) -> Response:
    state = _state(request)
    who = await _principal(request, Access.WRITE)
    message = await _body(request, state.limits, _parse)
    try:
        written = await state.ingestor.deliver(message, f"{message.source or 'collector'} as {who.user}")
    except StaleBatch as exc:  # older than the ids kept (serve --retain): refused for good, never double counted
        raise HTTPException(422, exc.message) from None
    except sa.exc.OperationalError as exc:
        log.warning("batch %s not written: %s", message.batch_id, exc)
        raise HTTPException(503, "store busy or unreachable; retry", {"Retry-After": "1"}) from None
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        log.warning("batch %s refused by the database: %s", message.batch_id, exc)
        raise HTTPException(422, "the store cannot hold this batch") from None
    return JSONResponse({"batch_id": message.batch_id, "written": written})


def _reading(read: Callable[[LocalSource, Request], Any]) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering with what the local learning source returns, for readers."""
    async def endpoint(request: Request) -> Response:
        await _principal(request, Access.READ)
        return await run_in_threadpool(lambda: _json(read(_state(request).source, request)))
    return endpoint


async def post_shadow_set(request: Request) -> Response:
    """Add a shadow set: every policy validated here too (400 naming the document), nothing stored on error."""
    state = _state(request)
    await _principal(request, Access.WRITE)
    body = await _body(request, state.limits, bytes)
    try:
        message = msgspec.json.decode(body, type=SetMessage)
        added = await run_in_threadpool(add_checked, state.store, message.name, message.source,
                                        [Document(d.where, d.obj) for d in message.documents])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise HTTPException(400, f"shadow set: {exc}") from None
    except InputError as exc:
        raise HTTPException(400, exc.message) from None
    return _json(added)


async def delete_shadow_set(request: Request) -> Response:
    state = _state(request)
    await _principal(request, Access.WRITE)
    try:
        await run_in_threadpool(remove_set, state.store, request.path_params["name"])
    except InputError as exc:
        raise HTTPException(404, exc.message) from None
    return _json({"removed": request.path_params["name"]})


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    try:
        return None if raw is None else float(raw)
    except ValueError:
        raise HTTPException(400, "since: expected seconds since the epoch") from None


async def metrics(request: Request) -> Response:
    await _principal(request, Access.READ)
    text = await run_in_threadpool(render_metrics, _state(request).store)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    def ping() -> None:
        with _state(request).store.reading() as conn:
            conn.execute(sa.text("SELECT 1"))
    try:
        await run_in_threadpool(ping)
    except sa.exc.SQLAlchemyError:
        return PlainTextResponse("store unreachable\n", status_code=503)
    return PlainTextResponse("ok\n")


ROUTES = [
    Route("/v1/batches", post_batch, methods=["POST"]),
    Route("/v1/learned", _reading(lambda source, _r: source.learned()), methods=["GET"]),
    Route("/v1/edges", _reading(lambda source, r: source.edges(r.query_params.get("namespace"))), methods=["GET"]),
    Route("/v1/deliveries", _reading(lambda source, _r: source.deliveries()), methods=["GET"]),
    Route("/v1/services", _reading(lambda source, _r: source.services()), methods=["GET"]),
    Route("/v1/evidence", _reading(lambda source, _r: source.evidence()), methods=["GET"]),
    Route("/v1/dns", _reading(lambda source, _r: source.dns_answers()), methods=["GET"]),
    Route("/v1/api-servers", _reading(lambda source, _r: source.api_servers()), methods=["GET"]),
    Route("/v1/shadow/sets", _reading(lambda source, _r: LocalShadow(source.store).sets()), methods=["GET"]),
    Route("/v1/shadow/sets", post_shadow_set, methods=["POST"]),
    Route("/v1/shadow/sets/{name}", delete_shadow_set, methods=["DELETE"]),
    Route("/v1/shadow/denied", _reading(lambda source, r: LocalShadow(source.store).denied(
        r.query_params.get("set"), _since(r))), methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),  # probes: anonymous, and they reveal nothing
    Route("/readyz", readyz, methods=["GET"]),
]


def create_app(store: Store, authenticator: Authenticator, *, limits: Limits | None = None,
               writers: int | None = None) -> Starlette:
    """The app serving ``store`` with ``writers`` concurrent write transactions (default 1)."""
    app = Starlette(routes=ROUTES, middleware=[Middleware(GZipMiddleware, minimum_size=4096)])
    app.state.netpol_gen = ServerState(store, authenticator, limits or Limits(), Ingestor(store, writers or 1),
                                       LocalSource(store))
    return app
