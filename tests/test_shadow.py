"""Shadow sets and ``watch`` on SQLite and PostgreSQL: through ``import`` and through ``serve`` over real HTTP.

The proposed set is what ``export`` writes for the bundled example's traffic minus one edge (the nightly
CronJob's connection to postgres, as a job that runs rarely would be missed), so it omits exactly that
edge; the store then learns all the traffic and must report that edge, and only it, as would-be denied.
Stands in for a user who exports, adds the result as a shadow set and watches before enforcing.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from netpol_gen.ingest.pipeline import Ingest
from netpol_gen.model import Flow, load_cluster
from netpol_gen.model.aggregate import Batch
from netpol_gen.model.flows import iter_flows
from netpol_gen.service.auth import SharedSecret
from netpol_gen.service.client import Retry, post_batch
from netpol_gen.service.server import create_app
from netpol_gen.service.shadow import ROLL_UP_EVERY as ROLL
from netpol_gen.service.shadow import ShadowJudge
from netpol_gen.store import schema as t
from netpol_gen.store.batches import Delivery, deliver_batches
from netpol_gen.store.db import open_store
from tests.cli import run_cli
from tests.serving import TOKEN, ThreadServer
from tests.test_cli_check import installed_command

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
CLUSTER = str(EXAMPLE / "cluster.yaml")
FAST = Retry(deadline=20.0, base=0.02, cap=0.3)
OMITTED = {"set": "proposed", "src": "booking/CronJob/nightly-report", "dst": "booking/StatefulSet/postgres",
           "port": 5432, "protocol": "TCP"}


def _flows() -> list[Flow]:
    with open(EXAMPLE / "flows.jsonl", "rb") as stream:
        return list(iter_flows(stream, "flows.jsonl"))


def _is_omitted(flow: Flow) -> bool:
    """The nightly report's connection to postgres: the last connection to 5432 in the example."""
    last = max((f.ts or 0.0) for f in _flows() if f.dst_port == 5432)
    return flow.dst_port == 5432 and flow.ts == last


def _write(path: Path, flows: list[Flow]) -> str:
    path.write_text("".join(flow.to_json() + "\n" for flow in flows))
    return str(path)


@pytest.fixture(scope="module")
def proposed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``export``'s policies for the example's traffic without the omitted edge."""
    work = tmp_path_factory.mktemp("proposed")
    flows = [flow for flow in _flows() if not _is_omitted(flow)]
    assert len(flows) == len(_flows()) - 1
    db = f"sqlite:///{work / 'learnt.db'}"
    learnt = run_cli("import", "--db", db, "--cluster", CLUSTER, "--flows", _write(work / "f.jsonl", flows))
    assert learnt.exit_code == 0, learnt.output
    outcome = run_cli("export", "--db", db, "--output-dir", str(work / "policies"))
    assert outcome.exit_code == 0, outcome.output
    return str(work / "policies")


def _watch(*args: str) -> list[dict[str, object]]:
    outcome = run_cli("watch", "--format", "jsonl", *args)
    assert outcome.exit_code == 0, outcome.output
    return [json.loads(line) for line in outcome.stdout.splitlines()]


def _edge(record: dict[str, object]) -> dict[str, object]:
    return {key: record[key] for key in OMITTED}


def test_a_set_omitting_one_edge_reports_exactly_that_edge_after_import(
        store_url: str, proposed: str, tmp_path: Path) -> None:
    all_flows = _write(tmp_path / "all.jsonl", _flows())
    assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows",
                   _write(tmp_path / "first.jsonl", _flows()[:10])).exit_code == 0
    added = run_cli("shadow", "add", "proposed", proposed, "--db", store_url)
    assert added.exit_code == 0, added.output
    assert "proposed" in run_cli("shadow", "list", "--db", store_url).stdout

    assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows", all_flows).exit_code == 0
    records = _watch("--db", store_url)
    assert [_edge(r) for r in records] == [OMITTED]
    assert records[0]["connections"] == 1
    assert records[0]["side"] == "both"  # the job's egress and postgres's ingress both leave it out
    assert set(records[0]["policies"]) >= {"booking/nightly-report-netpol-gen", "booking/postgres-netpol-gen"}
    assert str(records[0]["first_seen"]).endswith("Z")
    assert run_cli("watch", "--db", store_url, "--fail-on-deny").exit_code == 1
    assert run_cli("watch", "--db", store_url, "--since", "2100-01-01T00:00:00Z", "--fail-on-deny").exit_code == 0

    # the same file again is skipped, so nothing is counted twice; a set added now judges only what follows
    assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows", all_flows).exit_code == 0
    assert _watch("--db", store_url)[0]["connections"] == 1
    assert run_cli("shadow", "add", "late", proposed, "--db", store_url).exit_code == 0
    assert _watch("--db", store_url, "--set", "late") == []
    assert run_cli("shadow", "remove", "proposed", "--db", store_url).exit_code == 0
    assert _watch("--db", store_url) == []


def test_a_bad_policy_file_is_one_line_and_stores_nothing(store_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\n"
                   "spec: {podSelector: {}, policyTypes: [Sideways]}\n")
    code, out, err = run_cli("shadow", "add", "broken", str(bad), "--db", store_url)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and f"{bad}:doc 1" in err and "Traceback" not in err
    assert run_cli("shadow", "add", "Not_A_Name", str(EXAMPLE / "policies"), "--db", store_url).exit_code == 2
    assert run_cli("shadow", "list", "--db", store_url).stdout.strip() == "no shadow sets"
    assert run_cli("shadow", "remove", "nothing", "--db", store_url).exit_code == 2


def _batch(flows: list[Flow]) -> Batch:
    ingest = Ingest(load_cluster([CLUSTER]))
    ingest.add_flows(flows)
    return ingest.take_batch()


def _denied_series(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("netpol_gen_denied_connections_total{")}


@pytest.fixture
def serving(store_url: str) -> Iterator[tuple[str, ThreadServer]]:
    store = open_store(store_url)
    server = ThreadServer(create_app(store, SharedSecret(TOKEN))).start()
    yield store_url, server
    server.stop()
    store.close()


def test_serve_judges_batches_counts_once_per_delivery_and_a_restart_loses_nothing(
        serving: tuple[str, ThreadServer], proposed: str) -> None:
    store_url, server = serving
    env = {"NETPOL_GEN_TOKEN": TOKEN}
    added = run_cli("shadow", "add", "proposed", proposed, "--server", server.url, env=env)
    assert added.exit_code == 0, added.output
    cluster = load_cluster([CLUSTER])
    assert post_batch(server.url, TOKEN, _batch(_flows()), "b1", cluster=cluster, retry=FAST)
    records = _watch("--server", server.url, "--token", TOKEN)
    assert [_edge(r) for r in records] == [OMITTED]
    series = _denied_series(server.url)
    assert series == {
        'netpol_gen_denied_connections_total{direction="egress",namespace="booking",set="proposed",'
        'workload="CronJob/nightly-report"}': 1.0,
        'netpol_gen_denied_connections_total{direction="ingress",namespace="booking",set="proposed",'
        'workload="StatefulSet/postgres"}': 1.0,
    }

    # serve restarted (a new process on the same store): a redelivered batch counts nothing, a new one
    # without the cluster view (collectors send it only when it changed) is judged against the store's
    server.stop()
    restarted = open_store(store_url)
    again = ThreadServer(create_app(restarted, SharedSecret(TOKEN)), port=server.port).start()
    try:
        assert post_batch(again.url, TOKEN, _batch(_flows()), "b1", cluster=cluster, retry=FAST) is False
        assert set(_denied_series(again.url).values()) == {1.0}
        assert post_batch(again.url, TOKEN, _batch([f for f in _flows() if _is_omitted(f)]), "b2", retry=FAST)
        assert set(_denied_series(again.url).values()) == {2.0}
        records = _watch("--server", again.url, "--token", TOKEN)
        assert [(_edge(r), r["connections"]) for r in records] == [(OMITTED, 2)]
        listed = run_cli("shadow", "list", "--server", again.url, env=env).stdout
        assert listed.startswith("proposed\t")
        assert run_cli("shadow", "remove", "proposed", "--server", again.url, env=env).exit_code == 0
        assert _denied_series(again.url) == {}
    finally:
        again.stop()
        restarted.close()
    server.start()  # for the fixture's stop


def test_watch_follow_prints_an_edge_when_it_is_denied_and_stops_on_sigterm(proposed: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli("shadow", "add", "proposed", proposed, "--db", db).exit_code == 0
    watcher = subprocess.Popen([installed_command(), "watch", "--db", db, "--follow",
                                "--every", "0.2", "--format", "jsonl"], stdout=subprocess.PIPE, text=True)
    try:
        assert run_cli("import", "--db", db, "--cluster", CLUSTER, "--flows",
                       _write(tmp_path / "all.jsonl", _flows())).exit_code == 0
        assert watcher.stdout is not None
        ready, _, _ = select.select([watcher.stdout], [], [], 30)
        assert ready, "watch --follow printed nothing within 30 s"
        assert _edge(json.loads(watcher.stdout.readline())) == OMITTED
        os.kill(watcher.pid, signal.SIGTERM)
        assert watcher.wait(10) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()


def test_the_example_alerts_use_only_metrics_serve_exports(serving: tuple[str, ThreadServer], proposed: str) -> None:
    """Stands in for Prometheus evaluating deploy/monitoring/prometheusrule.yaml: every metric its rules
    name is one /metrics exposes (after one delivery, so each family has a sample)."""
    _, server = serving
    assert run_cli("shadow", "add", "proposed", proposed, "--server", server.url, "--token", TOKEN).exit_code == 0
    assert post_batch(server.url, TOKEN, _batch(_flows()), "b1", cluster=load_cluster([CLUSTER]), retry=FAST)
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    rule = yaml.safe_load((EXAMPLE.parent.parent / "deploy" / "monitoring" / "prometheusrule.yaml").read_text())
    named = {name for group in rule["spec"]["groups"] for r in group["rules"]
             for name in re.findall(r"netpol_gen_[a-z_]+", r["expr"])}
    assert named and named <= exported, named - exported
    assert httpx.get(f"{server.url}/metrics").status_code == 401


def test_a_batch_without_cluster_view_is_judged_against_the_store_as_another_writer_changed_it(
        store_url: str, proposed: str) -> None:
    """Stands in for two serve replicas on one store: a collector's changed view (catalogue's pod
    relabelled, so postgres's policy no longer admits it) reaches replica B; the collector's next batch,
    sent without a view because it did not change again, reaches replica A, which must judge it
    against the store's view, not the one it held from an earlier batch."""
    from dataclasses import replace

    from netpol_gen.model.cluster import Cluster
    from netpol_gen.service.shadow import ShadowJudge, deliver_judged
    from netpol_gen.service.shadow_source import add_checked, read_documents

    store = open_store(store_url)
    try:
        add_checked(store, "proposed", proposed, read_documents([proposed]))
        before = load_cluster([CLUSTER])
        relabelled = Cluster.build(
            before.namespaces.values(),
            [replace(p, labels={**p.labels, "app.kubernetes.io/name": "catalogue-v2"})
             if "10.244.1.15" in p.ips else p for p in before.pods],
            before.services, before.endpoint_slices, before.nodes)
        to_postgres = [f for f in _flows() if f.src_ip == "10.244.1.15" and f.dst_port == 5432]
        replica_a, replica_b = ShadowJudge(store), ShadowJudge(store)
        assert deliver_judged(replica_a, "a1", _batch(to_postgres[:1]), 1, "collect:n1", before)
        assert replica_a.judge(_batch(to_postgres[1:2])) == []
        assert deliver_judged(replica_b, "b1", _batch(_flows()[:1]), 1, "collect:n1", relabelled)
        denied = replica_a.judge(_batch(to_postgres[1:2]))
        assert [(d.dst.workload_name, d.side) for d in denied] == [("postgres", "ingress")]
    finally:
        store.close()


def test_since_counts_to_the_minute_and_day_old_minutes_roll_up_into_hours(store_url: str, proposed: str) -> None:
    """Stands in for a user asking `watch --since` about the last minutes after a deploy, on a store whose
    judge's clock (injected) is then moved two days on, as serve's would be."""
    from dataclasses import replace

    from netpol_gen.service.shadow import ShadowJudge, deliver_judged
    from netpol_gen.service.shadow_source import add_checked, read_documents

    (omitted,) = [f for f in _flows() if _is_omitted(f)]
    start = omitted.ts or 0.0
    start -= start % 3600  # the hour the two attempts fall in
    early, late = replace(omitted, ts=start + 600), replace(omitted, ts=start + 1800, src_port=40999)
    clock = [start + 1860]
    store = open_store(store_url)
    try:
        add_checked(store, "proposed", proposed, read_documents([proposed]))
        judge = ShadowJudge(store, clock=lambda: clock[0])
        cluster = load_cluster([CLUSTER])
        assert deliver_judged(judge, "early", _batch([early]), 1, "collect:n1", cluster)
        assert deliver_judged(judge, "late", _batch([late]), 1, "collect:n1", cluster)

        def counted(since: float) -> int:
            records = _watch("--db", store_url, "--since", _rfc3339(since))
            return sum(int(str(r["connections"])) for r in records)

        assert counted(start + 1200) == 1  # the last 11 minutes: the late attempt only
        assert counted(start) == 2

        clock[0] += 2 * 86400 + ROLL  # two days on: the next batch's transaction rolls that hour up
        assert deliver_judged(judge, "other", _batch(_flows()[:1]), 1, "collect:n1", cluster)
        with store.reading() as conn:
            hours = conn.execute(sa.select(t.shadow_denials.c.hour)).scalars().all()
        assert hours == [start]  # one row for the hour, keyed by its start
        assert counted(start) == 2  # nothing lost; resolution is now the hour (documented)
        assert counted(start + 1200) == 2
    finally:
        store.close()


def test_since_shorter_than_a_minute_is_refused_in_one_line(tmp_path: Path) -> None:
    code, out, err = run_cli("watch", "--db", f"sqlite:///{tmp_path / 's.db'}", "--since", "30s")
    assert code == 2 and out == "" and err.count("\n") == 1 and "per minute" in err


def _rfc3339(ts: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_group_of_batches_in_one_transaction_is_judged_per_batch_and_counted_once_per_id(
        store_url: str, proposed: str) -> None:
    """Stands in for ``serve``'s group commit: several collectors' batches found queued, written in one
    transaction, one of them twice in the group and the whole group delivered again (a replica's retry)."""
    assert run_cli("shadow", "add", "proposed", proposed, "--db", store_url).exit_code == 0
    store = open_store(store_url)
    judge, cluster = ShadowJudge(store), load_cluster([CLUSTER])
    everything, omitted = _batch(_flows()), _batch([f for f in _flows() if _is_omitted(f)])

    def group() -> list[Delivery]:
        return [Delivery(batch_id, batch, 1, "test", cluster if batch is everything else None,
                         judge.recorder(batch, cluster))
                for batch_id, batch in (("g1", everything), ("g2", omitted), ("g1", everything))]
    try:
        assert deliver_batches(store, group()) == [True, True, False]
        assert deliver_batches(store, group()) == [False, False, False]
    finally:
        store.close()
    records = _watch("--db", store_url)
    assert [(_edge(r), r["connections"]) for r in records] == [(OMITTED, 2)]
