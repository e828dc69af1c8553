"""``check`` gets the names and addresses a store learnt from the store (``--db``), from a server
(``--server``, the serve API over real HTTP) or from the flows themselves (``dst_names``): Cilium
``toFQDNs`` rules and the ``kube-apiserver`` entity are judged with them.

The set is ``export --target cilium`` of the bundled example (its external peers by ``toFQDNs``); without
names the three named external connections are denied (as tests/test_export_targets.py shows). Stands in
for a user checking a Cilium set on a laptop against flows collected in a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

from netpol_gen.model.flows import Flow, iter_flows
from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.server import create_app
from netpol_gen.store.db import open_store
from netpol_gen.store.learned import load_dns_answers
from tests.cli import run_cli
from tests.serving import TOKEN, ThreadServer
from tests.test_api_server_entity import API_SERVER, WEB, _files
from tests.test_export_targets import EXAMPLE, check, export

NAMED = {"142.250.74.42", "157.240.221.16", "203.0.113.40"}


def _named_flows(db: str, path: Path) -> Path:
    """The example's flows, each to a named address carrying the names the store recorded for it."""
    store = open_store(db)
    try:
        names: dict[str, list[str]] = {}
        for answer in load_dns_answers(store):
            names.setdefault(answer.address, []).append(answer.name)
    finally:
        store.close()
    with open(EXAMPLE / "flows.jsonl", "rb") as stream:
        lines = [json.loads(flow.to_json()) | ({"dst_names": names[flow.dst_ip]} if flow.dst_ip in names else {})
                 for flow in iter_flows(stream, "flows.jsonl")]
    assert {line["dst_ip"] for line in lines if "dst_names" in line} >= NAMED
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_names_on_the_flows_judge_fqdn_rules(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'example.db'}"
    assert run_cli("import", "--db", db, "--cluster", str(EXAMPLE / "cluster.yaml"),
                   "--pcap", str(EXAMPLE / "capture.pcap")).exit_code == 0
    export(db, "cilium", tmp_path / "policies")
    plain = check(EXAMPLE / "cluster.yaml", tmp_path / "policies", EXAMPLE / "flows.jsonl")
    assert {d["dst"] for d in plain["denied"]} == NAMED
    named = check(EXAMPLE / "cluster.yaml", tmp_path / "policies", _named_flows(db, tmp_path / "named.jsonl"))
    assert named["summary"]["allowed"] == named["summary"]["flows"], named["denied"]
    # a wrong name on a flow does not admit it
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text((tmp_path / "named.jsonl").read_text().replace("graph.facebook.com", "evil.example"))
    assert {d["dst"] for d in check(EXAMPLE / "cluster.yaml", tmp_path / "policies", wrong)["denied"]} == {
        "157.240.221.16"}


def test_the_server_gives_check_the_stores_names_and_api_server(tmp_path: Path) -> None:
    objects, flows = _files(tmp_path)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run_cli("import", "--db", db, "--cluster", str(EXAMPLE / "cluster.yaml"), "--cluster", str(objects),
                   "--pcap", str(EXAMPLE / "capture.pcap")).exit_code == 0
    assert run_cli("import", "--db", db, "--cluster", str(EXAMPLE / "cluster.yaml"), "--cluster", str(objects),
                   "--flows", str(flows)).exit_code == 0
    export(db, "cilium", tmp_path / "policies")
    # the example's flows and one to the API server's own address (as a conntrack dump names it, after DNAT),
    # judged on the snapshot without the kubernetes slice: only the server can say what that address is
    direct = tmp_path / "direct.jsonl"
    direct.write_text((EXAMPLE / "flows.jsonl").read_text()
                      + Flow(WEB, API_SERVER, 6443, "TCP", 42000, 1795305610.0).to_json() + "\n")
    store = open_store(db)
    server = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    try:
        report = check(EXAMPLE / "cluster.yaml", tmp_path / "policies", direct, "--server", server.url,
                       "--token", TOKEN)
        assert report["summary"]["allowed"] == report["summary"]["flows"], report["denied"]
        blind = check(EXAMPLE / "cluster.yaml", tmp_path / "policies", direct)
        assert {d["dst"] for d in blind["denied"]} == NAMED | {API_SERVER}
        no_token = run_cli("check", "--cluster", str(EXAMPLE / "cluster.yaml"), "--policies",
                           str(tmp_path / "policies"), "--flows", str(direct), "--server", server.url)
        assert no_token.exit_code == 2 and len(no_token.stderr.strip().splitlines()) == 1
    finally:
        server.stop()
        store.close()
