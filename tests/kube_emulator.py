"""A stateful stand-in for kube-apiserver's list and watch API, over real HTTP on 127.0.0.1, so the
official ``kubernetes`` client (its REST calls, ``watch.Watch().stream``, kubeconfig loading) runs as
against a real cluster.

What it keeps of the real server's semantics, for namespaces, nodes, pods, services (``/api/v1``),
endpointslices (``/apis/discovery.k8s.io/v1``), networkpolicies and ciliumnetworkpolicies (a CRD's kind; any
other path, as for a CNI whose CRDs are not installed, is a 404), and configmaps, asked for in their
namespace (``/api/v1/namespaces/NS/configmaps``) with a ``fieldSelector`` ``metadata.name=NAME`` (the one
way RBAC ``resourceNames`` lets a client list and watch them; recorded in each request):

* one resourceVersion counter across all resources (etcd's revision); every create, update and delete
  bumps it and stamps the object with it; creation sets uid and creationTimestamp;
* list: typed lists (``PodList``, items without kind/apiVersion) with ``metadata.resourceVersion``, paged
  with ``limit``/``continue``, every page from the snapshot taken by the first;
* watch (``?watch=true``): HTTP/1.1 chunked JSON lines, one event each (ADDED, MODIFIED, DELETED,
  BOOKMARK when ``allowWatchBookmarks`` and :meth:`bookmark` is called), replaying the history after the
  given resourceVersion then following live changes, ending cleanly after ``timeoutSeconds``;
* compaction (:meth:`compact`): a watch from an older version gets the real server's answer, an ERROR
  event carrying a Status with code 410 (reason Expired, "too old resource version");
* failures: :meth:`drop_watches` cuts every open watch mid-stream (no final chunk, as a dying
  connection does), ``available = False`` answers 503 to everything (an API server behind a load balancer
  while it restarts).

Every request is recorded (resource, watch or list, resourceVersion), so tests can see how the client
resumed.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from tests.http_json import reply_json

# resource -> (URL path, kind, apiVersion)
RESOURCES = {
    "namespaces": ("/api/v1/namespaces", "Namespace", "v1"),
    "nodes": ("/api/v1/nodes", "Node", "v1"),
    "pods": ("/api/v1/pods", "Pod", "v1"),
    "services": ("/api/v1/services", "Service", "v1"),
    "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", "discovery.k8s.io/v1"),
    # what serve --in-force watches: a built-in kind and a CRD's (Calico's is not served: a 404, as without its CRD)
    "networkpolicies": ("/apis/networking.k8s.io/v1/networkpolicies", "NetworkPolicy", "networking.k8s.io/v1"),
    "ciliumnetworkpolicies": ("/apis/cilium.io/v2/ciliumnetworkpolicies", "CiliumNetworkPolicy", "cilium.io/v2"),
    "configmaps": ("/api/v1/configmaps", "ConfigMap", "v1"),  # served per namespace only (_NAMESPACED)
}
_NAMESPACED = re.compile(r"^/api/v1/namespaces/([^/]+)/(configmaps)$")
CLUSTER_VIEW = ("namespaces", "nodes", "pods", "services", "endpointslices")  # what a collector watches
_BY_PATH = {path: name for name, (path, _, _) in RESOURCES.items()}


@dataclass(frozen=True)
class Request:
    resource: str
    watch: bool
    resource_version: str | None
    page: str | None = None  # the continue token
    namespace: str | None = None  # of a namespaced path
    field_selector: str | None = None


@dataclass(frozen=True)
class _Change:
    version: int
    resource: str
    type: str
    obj: dict[str, Any]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class KubeEmulator:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self.version = 1000
        self.oldest = 0  # the compaction point: watches from before it are answered 410
        self.available = True
        self.requests: list[Request] = []
        self._objects: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RESOURCES}
        self._changes: list[_Change] = []
        self._pages: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._uids = itertools.count(1)
        self._bookmarks = 0  # generations: watchers compare them with what they saw
        self._drops = 0
        self._closing = False
        self._streaming: dict[str, int] = dict.fromkeys(RESOURCES, 0)  # open watch streams

    # --- what controllers and kubelets do ----------------------------------------------------------

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", f"uid-{next(self._uids):04d}")
            meta["creationTimestamp"] = rfc3339(self._clock())
            return self._record(resource, "ADDED", obj)

    def update(self, resource: str, name: str, change: Callable[[dict[str, Any]], None],
               namespace: str | None = None) -> dict[str, Any]:
        with self._cond:
            obj = copy.deepcopy(self._objects[resource][self._key(namespace, name)])
            change(obj)
            return self._record(resource, "MODIFIED", obj)

    def delete(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        with self._cond:
            obj = copy.deepcopy(self._objects[resource][self._key(namespace, name)])
            return self._record(resource, "DELETED", obj)

    def compact(self) -> None:
        """Forget the history before now (etcd compaction): older watches must list again."""
        with self._cond:
            self.oldest = self.version

    def bookmark(self) -> None:
        """Send every watch that asked for bookmarks one, at the current version."""
        with self._cond:
            self._bookmarks += 1
            self._cond.notify_all()

    def drop_watches(self) -> None:
        with self._cond:
            self._drops += 1
            self._cond.notify_all()

    def set_available(self, available: bool) -> None:
        with self._cond:
            self.available = available
            if not available:
                self._drops += 1
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every request and change."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def streaming(self, resources: tuple[str, ...] = CLUSTER_VIEW) -> bool:
        """Whether every one of ``resources`` has a watch stream open (that a drop or a bookmark would reach)."""
        return all(self._streaming[name] for name in resources)

    def watches(self, resource: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.resource == resource and r.watch]

    def lists(self, resource: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.resource == resource and not r.watch and r.page is None]

    def _key(self, namespace: str | None, name: str) -> str:
        return f"{namespace}/{name}" if namespace else name

    def _record(self, resource: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        _, obj_kind, api_version = RESOURCES[resource]
        obj.update(kind=obj_kind, apiVersion=api_version)
        obj["metadata"]["resourceVersion"] = str(self.version)
        key = self._key(obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == "DELETED":
            del self._objects[resource][key]
        else:
            self._objects[resource][key] = obj
        self._changes.append(_Change(self.version, resource, kind, obj))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    # --- HTTP ----------------------------------------------------------------------------------------

    @contextmanager
    def serving(self, kubeconfig: Path) -> Iterator[str]:
        """Serve on a free port, write a kubeconfig for it to ``kubeconfig``; yields the server URL."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="kube-emulator", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "collector", "user": {"token": "collector-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "collector"}}],
        }))
        try:
            yield url
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            server.shutdown()
            server.server_close()

    def list_page(self, resource: str, limit: int | None, token: str | None,
                  match: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        with self._cond:
            if token:
                items, version = self._pages.pop(token)
            else:
                items = [self._list_item(o) for _, o in sorted(self._objects[resource].items()) if match(o)]
                version = self.version
        _, kind, api_version = RESOURCES[resource]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and len(items) > limit:
            items, rest = items[:limit], items[limit:]
            next_token = f"{resource}-{version}-{len(self._pages)}-{len(rest)}"
            with self._cond:
                self._pages[next_token] = (rest, version)
            metadata["continue"] = next_token
        return {"kind": f"{kind}List", "apiVersion": api_version, "metadata": metadata, "items": items}

    def _list_item(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("kind", "apiVersion")}

    def stream(self, resource: str, since: str | None, bookmarks: bool, timeout: float,
               send: Callable[[dict[str, Any]], None],
               match: Callable[[dict[str, Any]], bool] = lambda _: True) -> bool:
        """Send the watch events of ``resource`` after version ``since`` until the timeout (True: end
        cleanly) or a drop or shutdown (False: cut the connection)."""
        with self._cond:
            if since and int(since) < self.oldest:
                send({"type": "ERROR", "object": _status(
                    410, "Expired", f"too old resource version: {since} ({self.oldest})")})
                return True
            if since:
                position = int(since)
            else:  # no version: the current state as ADDED events first, as the real server does
                for obj in self._objects[resource].values():
                    if match(obj):
                        send({"type": "ADDED", "object": copy.deepcopy(obj)})
                position = self.version
            drops, marks = self._drops, self._bookmarks
            deadline = time.monotonic() + timeout
            self._streaming[resource] += 1
            self._cond.notify_all()
        try:
            return self._follow(resource, position, drops, marks, bookmarks, deadline, send, match)
        finally:
            with self._cond:
                self._streaming[resource] -= 1

    def _follow(self, resource: str, position: int, drops: int, marks: int, bookmarks: bool, deadline: float,
                send: Callable[[dict[str, Any]], None], match: Callable[[dict[str, Any]], bool]) -> bool:
        _, kind, api_version = RESOURCES[resource]
        while True:
            with self._cond:
                self._cond.wait_for(partial(self._news, position, drops, marks, deadline),
                                    timeout=max(0.0, deadline - time.monotonic()))
                if self._drops != drops or self._closing:
                    return False
                events = [{"type": c.type, "object": copy.deepcopy(c.obj)}
                          for c in self._changes if c.version > position and c.resource == resource and match(c.obj)]
                position = self.version
                if self._bookmarks != marks and bookmarks:
                    events.append({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(position)}}})
                marks = self._bookmarks
                timed_out = time.monotonic() >= deadline
            for event in events:
                send(event)
            if timed_out:
                return True

    def _news(self, position: int, drops: int, marks: int, deadline: float) -> bool:
        """Whether a watch at ``position`` has something to do (lock held)."""
        return (self._drops != drops or self._closing or self.version > position or self._bookmarks != marks
                or time.monotonic() >= deadline)


def _matches(namespace: str | None, name: str | None, obj: dict[str, Any]) -> bool:
    """Whether ``obj`` is in the asked-for namespace and has the field-selected name (either unset: any)."""
    meta = obj["metadata"]
    return (namespace is None or meta.get("namespace") == namespace) and (name is None or meta["name"] == name)


def _handler(emulator: KubeEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked watch streams, keep-alive lists

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            namespaced = _NAMESPACED.match(url.path)
            resource = namespaced.group(2) if namespaced else _BY_PATH.get(url.path)
            if resource is None or (resource == "configmaps" and not namespaced):
                self._reply(404, _status(404, "NotFound", "the server could not find the requested resource"))
                return
            namespace = namespaced.group(1) if namespaced else None
            selector = query.get("fieldSelector")
            wanted = selector.removeprefix("metadata.name=") if selector else None
            match = partial(_matches, namespace, wanted)
            watching = query.get("watch") == "true"
            with emulator._cond:
                emulator.requests.append(Request(resource, watching, query.get("resourceVersion"),
                                                 query.get("continue"), namespace, selector))
                emulator._cond.notify_all()
                available = emulator.available
            if not available:
                self._reply(503, _status(503, "ServiceUnavailable", "the server is currently unable to handle it"))
            elif watching:
                self._watch(resource, query, match)
            else:
                limit = int(query["limit"]) if "limit" in query else None
                self._reply(200, emulator.list_page(resource, limit, query.get("continue"), match))

        def _watch(self, resource: str, query: dict[str, str], match: Callable[[dict[str, Any]], bool]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(event: dict[str, Any]) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            try:
                clean = emulator.stream(resource, query.get("resourceVersion"),
                                        query.get("allowWatchBookmarks") == "true",
                                        float(query.get("timeoutSeconds", "1800")), send, match)
            except OSError:  # the client went away (it stopped watching)
                self.close_connection = True
                return
            if clean:
                self.wfile.write(b"0\r\n\r\n")
            else:  # cut mid-stream: no final chunk, the client sees the connection die
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            reply_json(self, status, body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
