"""List and watch one Kubernetes resource, the way an informer does, on its own thread.

A full (paged) list gives the state and a resourceVersion; a watch from that version gives every change
after it, with bookmarks moving the version on while nothing changes (so a resumed watch rarely finds
its version compacted away). A watch that ends (the server's timeoutSeconds) or breaks (a dropped
connection) is resumed from the last version seen, so no event is lost or repeated; only when the
server answers 410 Gone (that version is older than its history) is the resource listed again, and
whatever the new list lacks was deleted meanwhile. Failures are retried after an exponential, jittered,
bounded delay, so a thousand collectors do not hammer a recovering API server in step.

The client's ``watch.Watch().stream`` does the streaming; it is given ``timeout_seconds`` so that it
never retries on its own and every restart is ours (counted, logged, backed off).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("netpol_gen.collector.kube")

GONE = 410
NOT_FOUND = 404


@dataclass(frozen=True)
class Resource:
    """A watched resource and the generated client method that lists (and, with watch=True, watches) it."""

    name: str
    lister: Callable[[client.ApiClient], Callable[..., Any]]
    optional: bool = False  # an API the server may not serve (a CRD): 404 means none, asked again later


RESOURCES = (
    Resource("namespaces", lambda api: client.CoreV1Api(api).list_namespace),
    Resource("nodes", lambda api: client.CoreV1Api(api).list_node),
    Resource("services", lambda api: client.CoreV1Api(api).list_service_for_all_namespaces),
    Resource("endpointslices", lambda api: client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces),
    Resource("pods", lambda api: client.CoreV1Api(api).list_pod_for_all_namespaces),
)


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th consecutive retry: ``initial * 2**n`` capped at ``maximum``, then scaled by
    a random factor in [1 - jitter, 1]."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2 ** min(attempt, 32))
        return base * (1.0 - self.jitter * random.random())


@dataclass(frozen=True)
class WatchSettings:
    retention: float = 3600.0  # how long deleted pods (and nodes, namespaces) stay in the history
    page_size: int = 500  # objects per list request
    watch_timeout: int = 300  # the server ends each watch after this; it is resumed from its version
    connect_timeout: float = 10.0
    read_grace: float = 30.0  # a watch silent for watch_timeout + this is a dead connection
    backoff: Backoff = field(default_factory=Backoff)


class WatchSink(Protocol):
    """Where a watcher reports (the live source, which applies and counts under its lock)."""

    def listed(self, resource: str, items: list[dict[str, Any]], relist: bool) -> None: ...
    def event(self, resource: str, kind: str, raw: dict[str, Any]) -> None: ...
    def bookmark(self, resource: str) -> None: ...
    def watching(self, resource: str, restart: bool) -> None: ...
    def failed(self, resource: str) -> None: ...


class StateSink:
    """For a sink that wants only the state (``listed``, ``event``): bookmarks, watch (re)starts and
    failures need nothing of it (the watcher logs and counts them)."""

    def bookmark(self, resource: str) -> None:
        pass

    def watching(self, resource: str, restart: bool) -> None:
        pass

    def failed(self, resource: str) -> None:
        pass


class ResourceWatcher:
    """The list+watch loop of one resource; :meth:`run` until ``stopping`` is set."""

    def __init__(self, resource: Resource, api: client.ApiClient, sink: WatchSink, settings: WatchSettings,
                 stopping: threading.Event) -> None:
        self.resource = resource
        self._call = resource.lister(api)
        self._sink = sink
        self._settings = settings
        self._stopping = stopping
        self._watch: watch.Watch | None = None
        self._version: str | None = None  # of the last event applied; None: list (again)
        self._failures = 0  # consecutive, for the backoff; reset by anything that worked
        self._lists = 0
        self._watches = 0

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._version is None:
                    self._list()
                self._stream()
            except ApiException as exc:
                if exc.status == GONE:
                    log.info("resource version expired: listing again", extra={"fields": {
                        "resource": self.resource.name, "resource_version": self._version, "reason": exc.reason}})
                    self._version = None
                elif exc.status == NOT_FOUND and self.resource.optional:
                    self._not_served()
                else:
                    self._failed(f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:  # connection refused, reset, timed out, a malformed answer
                self._failed(f"{type(exc).__name__}: {exc}")

    def interrupt(self) -> None:
        """Unblock a watch waiting for events (called from another thread when stopping)."""
        current = self._watch
        if current is not None:
            current.stop()

    def _not_served(self) -> None:
        """An API not served holds no objects; it is listed again after the longest backoff."""
        if self._lists == 0:
            log.info("not served by this API server: none", extra={"fields": {"resource": self.resource.name}})
        self._sink.listed(self.resource.name, [], self._lists > 0)
        self._lists += 1
        self._version = None
        self._stopping.wait(self._settings.backoff.maximum)

    def _failed(self, error: str) -> None:
        if self._stopping.is_set():
            return
        self._sink.failed(self.resource.name)
        delay = self._settings.backoff.delay(self._failures)
        self._failures += 1
        log.warning("list/watch failed: retrying", extra={"fields": {
            "resource": self.resource.name, "error": error, "retry_in": round(delay, 3), "attempt": self._failures}})
        self._stopping.wait(delay)

    def _list(self) -> None:
        """Every object, page by page (one consistent snapshot), and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response = self._call(limit=self._settings.page_size, _continue=token, _preload_content=False,
                                  _request_timeout=(self._settings.connect_timeout, self._settings.read_grace))
            page = json.loads(response.data)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        relist = self._lists > 0
        self._lists += 1
        self._sink.listed(self.resource.name, items, relist)
        self._version = str(meta.get("resourceVersion") or "")
        self._failures = 0
        log.info("listed", extra={"fields": {"resource": self.resource.name, "objects": len(items),
                                              "resource_version": self._version, "relist": relist}})

    def _stream(self) -> None:
        """Watch from the last version until the stream ends or breaks, keeping the version of every
        event applied, so that the next watch resumes right after it."""
        current = self._watch = watch.Watch(return_type=object)  # events as plain dicts
        self._sink.watching(self.resource.name, restart=self._watches > 0)
        self._watches += 1
        log.debug("watching", extra={"fields": {"resource": self.resource.name, "resource_version": self._version}})
        settings = self._settings
        try:
            for event in current.stream(
                self._call, resource_version=self._version, allow_watch_bookmarks=True,
                timeout_seconds=settings.watch_timeout,
                _request_timeout=(settings.connect_timeout, settings.watch_timeout + settings.read_grace),
            ):
                kind, raw = event["type"], event["raw_object"]
                if kind == "BOOKMARK":
                    self._sink.bookmark(self.resource.name)
                else:
                    self._sink.event(self.resource.name, kind, raw)
                self._version = current.resource_version or self._version
                self._failures = 0
                if self._stopping.is_set():
                    break
        finally:
            self._watch = None
