"""``netpol-gen diff --against-cluster``: the policies in force read from a Kubernetes API server.

The server here is a small stateful emulator standing in for kube-apiserver: real HTTP on 127.0.0.1,
reached by the official ``kubernetes`` client through a kubeconfig, serving
``GET /apis/networking.k8s.io/v1/networkpolicies`` as a NetworkPolicyList JSON with what the real
server adds (uid, resourceVersion, managedFields, the last-applied annotation, typed-list items without
kind/apiVersion) and its paging (``limit`` / ``continue``). It records every request, so the tests can
also show that diff only reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from netpol_gen.review.in_force import fetch_policies_in_force
from tests.cli import run_cli
from tests.http_json import reply_json
from tests.test_diff import CLUSTER, DROP_RULE, FLOWS, IN_FORCE, api_form

LIST_PATH = "/apis/networking.k8s.io/v1/networkpolicies"


@dataclass
class ApiServerState:
    policies: list[dict[str, Any]]
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path with query)
    status: int = 200

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        start = int(query.get("continue", ["0"])[0] or 0)
        limit = int(query.get("limit", [str(len(self.policies))])[0])
        items = [{k: v for k, v in p.items() if k not in ("apiVersion", "kind")}
                 for p in self.policies[start:start + limit]]
        metadata: dict[str, Any] = {"resourceVersion": "2000"}
        if start + limit < len(self.policies):
            metadata["continue"] = str(start + limit)
        return {"kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1", "metadata": metadata,
                "items": items}


def _handler(state: ApiServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            reply_json(self, status, body)

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            url = urlparse(self.path)
            if url.path != LIST_PATH:
                self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                  "reason": "NotFound", "message": "the server could not find the requested resource"})
            elif state.status != 200:
                self._reply(state.status, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                           "code": state.status, "reason": "Forbidden",
                                           "message": "networkpolicies.networking.k8s.io is forbidden"})
            else:
                self._reply(200, state.page(parse_qs(url.query)))

        def do_POST(self) -> None:  # any write would be recorded and refused
            state.requests.append(("POST", self.path))
            self._reply(405, {"kind": "Status", "code": 405})

        do_PUT = do_PATCH = do_DELETE = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServerState]:
    """The in-force ticket-booking policies served as the API server would, and a kubeconfig for it."""
    policies = [api_form(p, n) for n, p in enumerate(yaml.safe_load_all(IN_FORCE.read_text()), 1)]
    state = ApiServerState(policies)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "reader", "user": {"token": "read-only-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "reader"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_against_cluster(proposed: Path, *extra: str) -> Any:
    return run_cli("diff", "--proposed", str(proposed), "--against-cluster", "--cluster", str(CLUSTER),
                   "--flows", str(FLOWS), *extra)


def test_policies_read_back_from_the_cluster_equal_the_applied_files(api_server: ApiServerState) -> None:
    result = run_against_cluster(IN_FORCE, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["policies"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 6}
    assert {method for method, _ in api_server.requests} == {"GET"}
    assert all(path.startswith(LIST_PATH) for _, path in api_server.requests)


def test_a_proposed_set_that_cuts_flows_exits_3_against_the_cluster(api_server: ApiServerState) -> None:
    result = run_against_cluster(DROP_RULE)
    assert result.exit_code == 3, result.output
    assert "changed booking/data-tier" in result.stdout
    assert "booking/Deployment/booking -> booking/Deployment/redis TCP/6379  x6" in result.stdout


def test_every_page_of_the_list_is_read(api_server: ApiServerState) -> None:
    documents = fetch_policies_in_force(page_size=4)
    assert [d.key for d in documents] == [f"booking/{p['metadata']['name']}" for p in api_server.policies]
    assert len(api_server.requests) == 2  # 6 policies, 4 per page
    assert "continue=4" in api_server.requests[1][1]


def test_an_api_error_is_one_line_and_exit_2(api_server: ApiServerState) -> None:
    api_server.status = 403
    result = run_against_cluster(IN_FORCE)
    assert result.exit_code == 2
    assert result.stderr == "netpol-gen: error: --against-cluster: listing NetworkPolicies failed: HTTP 403 Forbidden\n"


def test_no_kubeconfig_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = run_against_cluster(IN_FORCE)
    assert result.exit_code == 2
    assert result.stderr.startswith("netpol-gen: error: --against-cluster: no access to a cluster: ")
    assert result.stderr.count("\n") == 1
