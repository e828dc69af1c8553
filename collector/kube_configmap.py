"""One ConfigMap, kept current by list+watch: what ``serve --shadow-configmap NAMESPACE/NAME`` reads
its shadow sets from (:class:`netpol_gen.service.synced_sets.ConfigMapSets`).

Only that object is asked for (a field selector on its name, in its namespace), so its RBAC can be a
Role naming it (``resourceNames``): get, list and watch of one ConfigMap, nothing else. The watch loop
is the collector's (:class:`~netpol_gen.collector.kube_watch.ResourceWatcher`): resumed from its version,
listed again after a 410, backed off on failures. A ConfigMap that does not exist holds no set; created
later, it is seen by the watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from kubernetes import client

from netpol_gen.collector.kube_watch import Resource, ResourceWatcher, StateSink, WatchSettings
from netpol_gen.errors import InputError

log = logging.getLogger("netpol_gen.collector.kube")


def configmap_resource(namespace: str, name: str) -> Resource:
    """The one ConfigMap as a watched resource."""
    def lister(api: client.ApiClient) -> Callable[..., Any]:
        return partial(client.CoreV1Api(api).list_namespaced_config_map, namespace,
                       field_selector=f"metadata.name={name}")
    return Resource(f"configmap {namespace}/{name}", lister)


class ConfigMapWatch(StateSink):
    """Hands ``take`` the ConfigMap's ``data`` on every state (empty when it does not exist), on the
    watch's thread; ``taken`` counts the states handed over, for :meth:`wait_for`."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str,
                 take: Callable[[Mapping[str, str]], object], settings: WatchSettings | None = None) -> None:
        self._api, self._take = api, take
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self.taken = 0
        self._watcher = ResourceWatcher(configmap_resource(namespace, name), api, self, settings or WatchSettings(),
                                        self._stopping)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watcher.run, name=f"kube-{self._watcher.resource.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._watcher.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
        self._api.close()

    def wait_for(self, taken: int, timeout: float) -> bool:
        """Wait until ``taken`` states were handed over."""
        with self._changed:
            return self._changed.wait_for(lambda: self.taken >= taken, timeout)

    def _hand(self, data: Mapping[str, str]) -> None:
        try:
            self._take(data)
        except InputError as exc:
            log.warning("shadow sets not taken: %s", exc)
        except Exception as exc:  # the store unreachable: the next change tries again
            log.warning("shadow sets not updated: %s", str(exc).splitlines()[0])
        with self._changed:
            self.taken += 1
            self._changed.notify_all()

    # --- WatchSink ---------------------------------------------------------------------------------

    def listed(self, resource: str, items: list[dict[str, Any]], relist: bool) -> None:
        self._hand(dict((items[0].get("data") or {}) if items else {}))

    def event(self, resource: str, kind: str, raw: dict[str, Any]) -> None:
        self._hand({} if kind == "DELETED" else dict(raw.get("data") or {}))
