"""The cluster as the API watch has seen it, with the recent past kept, so attribution at a packet's time
is right after the object is gone: a flow is attributed when its interval is cut, seconds after the
packet, and a pod deleted (or restarted with a new IP) in between must still own the old address then.

Each pod (by uid) keeps the interval in which it held its IPs: from its creationTimestamp (or, when
the watch saw it get its IPs, that moment: a pod created while another still held the address must not
take the other's last packets), to the time the API deleted it (the DELETED event or, when a relist
finds it missing, the relist), or to when it finished (Succeeded/Failed). A pod whose IPs change
(sandbox recreated after a node reboot) keeps the old tenure as a separate view. Deleted pods, earlier
tenures, namespaces and nodes are kept until ``retention`` seconds after they ended; Services and
EndpointSlices are not (the model gives them no lifetime, and a kept Service would claim a ClusterIP the
API may already have given to another).

Not thread-safe: :class:`netpol_gen.collector.kube.LiveClusterSource` serialises access.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from netpol_gen.errors import SnapshotError
from netpol_gen.model.cluster import Cluster, EndpointSlice, Namespace, Node, Pod, Service
from netpol_gen.model.documents import Document
from netpol_gen.model.snapshot import (
    Owners,
    parse_endpoint_slice,
    parse_namespace,
    parse_node,
    parse_pod,
    parse_service,
)

log = logging.getLogger("netpol_gen.collector.kube")

FINISHED = ("Succeeded", "Failed")

_T = TypeVar("_T")


def object_key(raw: Mapping[str, Any]) -> str:
    """How an API object is known across events and relists: its uid (``namespace/name`` without one)."""
    meta = raw.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")


@dataclass
class _Kept(Generic[_T]):
    """Objects of one kind by key; with ``keep_gone``, deleted ones stay until the retention horizon."""

    keep_gone: bool
    live: dict[str, _T] = field(default_factory=dict)
    gone: dict[str, tuple[_T, float]] = field(default_factory=dict)

    def put(self, key: str, obj: _T) -> None:
        self.live[key] = obj
        self.gone.pop(key, None)

    def remove(self, key: str, now: float) -> None:
        obj = self.live.pop(key, None)
        if obj is not None and self.keep_gone:
            self.gone[key] = (obj, now)

    def prune(self, horizon: float) -> bool:
        old = [key for key, (_, when) in self.gone.items() if when < horizon]
        for key in old:
            del self.gone[key]
        return bool(old)

    def all(self) -> list[_T]:
        """Gone objects first, so that a live one of the same name or address wins the cluster's indexes."""
        return [obj for obj, _ in self.gone.values()] + list(self.live.values())


@dataclass
class _PodRecord:
    current: Pod
    past: list[Pod] = field(default_factory=list)  # earlier tenures: other IPs, each with its interval
    deleted: bool = False


def _held_until(pod: Pod, now: float) -> Pod:
    """The view of a pod the API still has: a finished pod held its IPs until it finished (or until we
    saw it finished); a running one, even terminating, holds them until it is deleted."""
    if pod.phase in FINISHED:
        return replace(pod, ended=now if pod.ended is None else min(pod.ended, now))
    return pod if pod.ended is None else replace(pod, ended=None)


class PodHistory:
    def __init__(self) -> None:
        self._records: dict[str, _PodRecord] = {}

    def live_keys(self) -> set[str]:
        return {uid for uid, record in self._records.items() if not record.deleted}

    def put(self, pod: Pod, now: float) -> None:
        pod = _held_until(pod, now)
        record = self._records.get(pod.uid)
        if record is None or record.deleted:  # a deleted uid never comes back; a replayed ADDED may
            if record is None:
                self._records[pod.uid] = _PodRecord(pod)
            return
        before = record.current
        if before.ips and pod.ips != before.ips:  # lost or changed its addresses: close that tenure
            record.past.append(before if before.ended is not None else replace(before, ended=now))
            pod = replace(pod, created=now)
        elif not before.ips and pod.ips:  # got its addresses while we watched
            pod = replace(pod, created=max(now, pod.created or now))
        else:
            ended = before.ended if before.ended is not None else pod.ended
            pod = replace(pod, created=before.created, ended=ended)
        record.current = pod

    def delete(self, uid: str, now: float) -> None:
        record = self._records.get(uid)
        if record is None or record.deleted:
            return
        ended = record.current.ended
        record.current = replace(record.current, ended=now if ended is None else min(ended, now))
        record.deleted = True

    def prune(self, horizon: float) -> bool:
        """Forget tenures that ended before ``horizon``; a pod still in the API is never forgotten."""
        changed = False
        for uid in list(self._records):
            record = self._records[uid]
            kept = [pod for pod in record.past if pod.ended is None or pod.ended >= horizon]
            changed |= len(kept) != len(record.past)
            record.past = kept
            ended = record.current.ended
            if record.deleted and ended is not None and ended < horizon and not record.past:
                del self._records[uid]
                changed = True
        return changed

    def all(self) -> Iterator[Pod]:
        for record in self._records.values():
            yield from record.past
            yield record.current


_PARSERS: dict[str, Callable[[Document], Any]] = {
    "namespaces": parse_namespace, "nodes": parse_node, "services": parse_service}


class ClusterHistory:
    """Applies list and watch events of the five resources and builds a :class:`Cluster` from them."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._owners = Owners()  # no controllers watched: workloads are named from owner references
        self._pods = PodHistory()
        self._namespaces: _Kept[Namespace] = _Kept(keep_gone=True)
        self._nodes: _Kept[Node] = _Kept(keep_gone=True)
        self._services: _Kept[Service] = _Kept(keep_gone=False)
        self._slices: _Kept[EndpointSlice] = _Kept(keep_gone=False)
        self._kept: dict[str, _Kept[Any]] = {"namespaces": self._namespaces, "nodes": self._nodes,
                                             "services": self._services, "endpointslices": self._slices}

    def apply(self, resource: str, event: str, raw: dict[str, Any], now: float) -> None:
        """One watch event (ADDED, MODIFIED or DELETED) of ``resource`` seen at ``now``."""
        key = object_key(raw)
        if event == "DELETED":
            self._put(resource, key, raw, now)  # the final state, then its end
            self._remove(resource, key, now)
        else:
            self._put(resource, key, raw, now)

    def relisted(self, resource: str, items: Iterable[dict[str, Any]], now: float) -> int:
        """A full list of ``resource``: every object is (re)applied, and those missing from it were
        deleted while we were not watching; they end as of the list. Returns how many those were."""
        seen = set()
        for raw in items:
            key = object_key(raw)
            seen.add(key)
            self._put(resource, key, raw, now)
        missing = self._live_keys(resource) - seen
        for key in missing:
            self._remove(resource, key, now)
        return len(missing)

    def prune(self, now: float) -> bool:
        horizon = now - self.retention
        changed = self._pods.prune(horizon)
        changed |= self._namespaces.prune(horizon)
        return self._nodes.prune(horizon) or changed

    def build(self) -> Cluster:
        return Cluster.build(
            self._namespaces.all(), self._pods.all(), self._services.all(), self._slices.all(), self._nodes.all()
        )

    def _live_keys(self, resource: str) -> set[str]:
        if resource == "pods":
            return self._pods.live_keys()
        return set(self._kept[resource].live)

    def _put(self, resource: str, key: str, raw: dict[str, Any], now: float) -> None:
        doc = Document(f"{resource} {key}", raw)
        try:
            if resource == "pods":
                self._pods.put(parse_pod(doc, self._owners), now)
            elif resource == "endpointslices":
                eps = parse_endpoint_slice(doc)
                if eps is None:  # not a Service's slice (no kubernetes.io/service-name label)
                    self._slices.remove(key, now)
                else:
                    self._slices.put(key, eps)
            else:
                self._kept[resource].put(key, _PARSERS[resource](doc))
        except SnapshotError as exc:  # one odd object must not stop the watch; the old view stays
            log.warning("skipping an API object the model cannot read", extra={"fields": {
                "resource": resource, "error": exc.message}})

    def _remove(self, resource: str, key: str, now: float) -> None:
        if resource == "pods":
            self._pods.delete(key, now)
        else:
            self._kept[resource].remove(key, now)
