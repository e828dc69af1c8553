"""The policies in force, as the API server has them, kept current by list+watch.

Every kind the evaluator's front-ends read is watched (NetworkPolicy, the network-policy-api's
ClusterNetworkPolicy and v1alpha1 (Baseline)AdminNetworkPolicy, Cilium's and Calico's), one
:class:`~netpol_gen.collector.kube_watch.ResourceWatcher` thread each, so a watch that ends or breaks
resumes from its version and a 410 lists again, as for the collector's cluster view. A kind whose API
the server does not serve (its CRD is not installed: 404) holds nothing and is listed again later,
so a CNI installed after start is picked up.

Once every kind was listed, each change hands the whole set, in a stable order, to ``publish`` (on one
thread of its own, after changes stopped arriving for ``settle`` seconds, so a GitOps sync applying a
hundred policies is one update, not a hundred). ``serve --in-force`` publishes it to the store as the
shadow set ``in-force`` (:func:`netpol_gen.service.synced_sets.sync_set`), which every batch is then
judged against like any proposed set: its denials are the connections the CNI drops, or would drop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from netpol_gen.collector.kube_watch import Resource, ResourceWatcher, StateSink, WatchSettings
from netpol_gen.errors import InputError
from netpol_gen.model.documents import Document

log = logging.getLogger("netpol_gen.collector.kube")


@dataclass(frozen=True)
class PolicyKind:
    """A policy API: its group/version, kind and plural (the path segment of its list)."""

    api_version: str
    kind: str
    plural: str

    def resource(self) -> Resource:
        if self.api_version == "networking.k8s.io/v1":
            return Resource(self.plural, lambda api: client.NetworkingV1Api(api).list_network_policy_for_all_namespaces,
                            optional=True)
        group, version = self.api_version.split("/")

        def lister(api: client.ApiClient) -> Callable[..., Any]:
            custom = client.CustomObjectsApi(api)
            return lambda **kwargs: custom.list_cluster_custom_object(group, version, self.plural, **kwargs)

        return Resource(f"{self.plural}.{group}", lister, optional=True)


POLICY_KINDS = (
    PolicyKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    PolicyKind("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies"),
    PolicyKind("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies"),
    PolicyKind("policy.networking.k8s.io/v1alpha1", "BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies"),
    PolicyKind("cilium.io/v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies"),
    PolicyKind("cilium.io/v2", "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies"),
    PolicyKind("projectcalico.org/v3", "NetworkPolicy", "networkpolicies"),
    PolicyKind("projectcalico.org/v3", "GlobalNetworkPolicy", "globalnetworkpolicies"),
)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


def _document(kind: PolicyKind, obj: dict[str, Any]) -> Document:
    """A listed or watched object as a policy document (typed lists leave kind and apiVersion out)."""
    meta = obj.get("metadata") or {}
    name = f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    body = {key: value for key, value in obj.items() if key not in ("status",)}
    return Document(f"cluster:{kind.kind}.{kind.api_version.split('/')[0]} {name}",
                    {**body, "apiVersion": kind.api_version, "kind": kind.kind})


class PolicyWatch(StateSink):
    """The policies in force, watched; ``publish`` gets every new state once all kinds were listed."""

    def __init__(self, api: client.ApiClient, publish: Callable[[list[Document]], None],
                 settings: WatchSettings | None = None, kinds: tuple[PolicyKind, ...] = POLICY_KINDS,
                 settle: float = 0.5, retry: float = 5.0) -> None:
        self._api, self._publish, self._settle, self._retry = api, publish, settle, retry
        self._kinds = {kind.resource().name: kind for kind in kinds}
        self._objects: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self._kinds}
        self._listed: set[str] = set()
        self._changed = threading.Condition()
        self._dirty = False
        self.published: list[list[Document]] = []  # every state handed to publish, for wait_for
        self._stopping = threading.Event()
        settings = settings or WatchSettings()
        self._watchers = [ResourceWatcher(kind.resource(), api, self, settings, self._stopping) for kind in kinds]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [(f"kube-{w.resource.name}", w.run) for w in self._watchers]
        for name, target in [*targets, ("in-force-publish", self._publishing)]:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            for watcher in self._watchers:
                watcher.interrupt()
            thread.join(timeout / len(self._threads))
        self._api.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def documents(self) -> list[Document]:
        """Every policy in force now, ordered by kind then namespace/name (a stable value to compare)."""
        with self._changed:
            return [_document(self._kinds[name], obj) for name in self._kinds
                    for _, obj in sorted(self._objects[name].items())]

    def _publishing(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopping.is_set() or (
                    self._dirty and len(self._listed) == len(self._kinds)))
                if self._stopping.is_set():
                    return
                # a burst of changes is one state: wait until none came for `settle` seconds
                while self._dirty:
                    self._dirty = False
                    self._changed.wait_for(lambda: self._dirty or self._stopping.is_set(), self._settle)
            documents = self.documents()
            try:
                self._publish(documents)
            except InputError as exc:  # a policy the evaluator cannot read: the set stays as it was
                log.warning("policies in force not taken: %s", exc)
            except Exception as exc:  # the store unreachable: publish again after a while
                log.warning("publishing the policies in force failed, retrying: %s", exc)
                with self._changed:
                    self._dirty = True
                self._stopping.wait(self._retry)
            with self._changed:
                self.published.append(documents)
                self._changed.notify_all()

    # --- WatchSink ---------------------------------------------------------------------------------

    def listed(self, resource: str, items: list[dict[str, Any]], relist: bool) -> None:
        with self._changed:
            objects = {_key(obj): obj for obj in items}
            first = resource not in self._listed
            self._listed.add(resource)
            if first or objects != self._objects[resource]:  # an API not served is listed again and again
                self._objects[resource] = objects
                self._dirty = True
            self._changed.notify_all()

    def event(self, resource: str, kind: str, raw: dict[str, Any]) -> None:
        with self._changed:
            if kind == "DELETED":
                self._objects[resource].pop(_key(raw), None)
            else:
                self._objects[resource][_key(raw)] = raw
            self._dirty = True
            self._changed.notify_all()
