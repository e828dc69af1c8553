"""Where the collector gets the cluster from: a static snapshot (``--cluster FILE``) or the live
Kubernetes API, watched for as long as the collector runs.

:class:`LiveClusterSource` lists and watches pods, namespaces, Services, EndpointSlices and nodes, one
thread per resource (:mod:`netpol_gen.collector.kube_watch`), into a history that keeps deleted pods
and earlier IP tenures for a while (:mod:`netpol_gen.collector.kube_history`), so a flow cut from an
interval seconds after its packets is attributed to the pod that held the address *then*.
:meth:`LiveClusterSource.current` rebuilds the :class:`Cluster` only after something changed, and
otherwise returns the very same object, so the ingest path's caches survive between intervals.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config

from netpol_gen.collector.kube_history import ClusterHistory
from netpol_gen.collector.kube_watch import RESOURCES, ResourceWatcher, WatchSettings
from netpol_gen.errors import InputError
from netpol_gen.model.cluster import Cluster

log = logging.getLogger("netpol_gen.collector.kube")


class ClusterSource(Protocol):
    """The cluster as currently known; called by the collector once per interval, from any thread."""

    def current(self) -> Cluster: ...


@dataclass(frozen=True)
class StaticClusterSource:
    """A cluster loaded once (``--cluster FILE``): for tests and air-gapped nodes."""

    cluster: Cluster

    def current(self) -> Cluster:
        return self.cluster


@dataclass(frozen=True)
class KubeStats:
    """Counters of the live source, for the collector's metrics (a copy: read, never updated)."""

    events: int = 0  # ADDED/MODIFIED/DELETED events applied
    bookmarks: int = 0
    watch_restarts: int = 0  # watches started after the first of their resource, for any reason
    relists: int = 0  # lists after the first of their resource (410 Gone)
    errors: int = 0  # failed list or watch requests (each retried after a backoff)
    synced: bool = False  # every resource listed at least once


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for the cluster we run in (service account), else for ``kubeconfig`` (default
    $KUBECONFIG or ~/.kube/config, its current context), as kubectl would choose."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        # $KUBECONFIG is read here, not when the client is imported (its default is fixed at import)
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return config.new_client_from_config(config_file=path, persist_config=False)
    except config.ConfigException as exc:
        raise InputError(f"no access to a cluster: {exc}", where="kubernetes API") from None


class LiveClusterSource:
    """The cluster as the API server tells it, kept current by list+watch threads; thread-safe.

    Every applied event, bookmark and counter change notifies one condition, which :meth:`wait_for`
    waits on (tests and start-up synchronise on it rather than sleeping).
    """

    def __init__(self, api: client.ApiClient, settings: WatchSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._settings = settings or WatchSettings()
        self._clock = clock
        self._history = ClusterHistory(self._settings.retention)
        self._changed = threading.Condition(threading.RLock())
        self._cluster: Cluster | None = None  # None: rebuild on the next current()
        self._stats = KubeStats()
        self._listed: set[str] = set()
        self._stopping = threading.Event()
        self._watchers = [ResourceWatcher(r, api, self, self._settings, self._stopping) for r in RESOURCES]
        self._threads: list[threading.Thread] = []

    @classmethod
    def connect(cls, kubeconfig: str | None = None, settings: WatchSettings | None = None,
                clock: Callable[[], float] = time.time) -> LiveClusterSource:
        """A source for the cluster :func:`api_client` finds; call :meth:`start`, then :meth:`wait_synced`
        before trusting :meth:`current` (until then it is the part listed so far)."""
        return cls(api_client(kubeconfig), settings, clock)

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for watcher in self._watchers:
            thread = threading.Thread(target=watcher.run, name=f"kube-{watcher.resource.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every watch and wait (up to ``timeout``) for the threads to end."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            # again each round: a watch that was starting has no socket to shut yet, and the client's
            # stream() clears its stop flag when it begins, so one interrupt can miss it
            for watcher in self._watchers:
                watcher.interrupt()
            for thread in self._threads:
                thread.join(0.05)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("watch threads did not stop in time", extra={"fields": {"threads": alive}})
        self._api.close()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every resource has been listed, waiting up to ``timeout`` seconds for it."""
        return self.wait_for(lambda: self._stats.synced, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every change the watches apply."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # --- the view --------------------------------------------------------------------------------

    def current(self) -> Cluster:
        with self._changed:
            if self._history.prune(self._clock()) or self._cluster is None:
                self._cluster = self._history.build()
            return self._cluster

    @property
    def stats(self) -> KubeStats:
        with self._changed:
            return self._stats

    @property
    def watch_restarts(self) -> int:
        """For the collector's ``api_watch_restarts`` gauge."""
        return self.stats.watch_restarts

    # --- WatchSink: called by the watcher threads ------------------------------------------------

    def listed(self, resource: str, items: list[dict[str, Any]], relist: bool) -> None:
        with self._changed:
            gone = self._history.relisted(resource, items, self._clock())
            self._listed.add(resource)
            synced = len(self._listed) == len(self._watchers)
            if synced and not self._stats.synced:
                log.info("cluster view synced", extra={"fields": {"resources": sorted(self._listed)}})
            if gone:
                log.info("relist: objects deleted while not watching", extra={"fields": {
                    "resource": resource, "deleted": gone}})
            self._cluster = None
            self._count(relists=self._stats.relists + int(relist), synced=synced)

    def event(self, resource: str, kind: str, raw: dict[str, Any]) -> None:
        with self._changed:
            self._history.apply(resource, kind, raw, self._clock())
            self._cluster = None
            self._count(events=self._stats.events + 1)

    def bookmark(self, resource: str) -> None:
        with self._changed:
            self._count(bookmarks=self._stats.bookmarks + 1)

    def watching(self, resource: str, restart: bool) -> None:
        if restart:
            with self._changed:
                self._count(watch_restarts=self._stats.watch_restarts + 1)

    def failed(self, resource: str) -> None:
        with self._changed:
            self._count(errors=self._stats.errors + 1)

    def _count(self, **counters: Any) -> None:
        """Update counters and wake the waiters (lock held)."""
        self._stats = dataclasses.replace(self._stats, **counters)
        self._changed.notify_all()
