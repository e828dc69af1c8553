"""``netpol-gen map``'s result object and command: the ticket-booking capture imported into a real
store (SQLite and PostgreSQL) stands in for a cluster's learning; the hand-written policies of the
example stand in for the set in force. Fates are checked against ``diff``'s own library call, so
the map and the diff cannot drift apart. (The page itself is driven in a browser in test_map_browser.)
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netpol_gen.review.diff import DiffRequest, review_change
from netpol_gen.review.map_build import MapRequest, build_service_map
from netpol_gen.review.map_layout import to_dot
from netpol_gen.review.map_model import Fate, ServiceMap
from netpol_gen.service.source import learning_source
from netpol_gen.synthesizer import Options
from tests.cli import run_cli
from tests.serving import TOKEN, Serve, free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
CLUSTER, IN_FORCE = EXAMPLE / "cluster.yaml", EXAMPLE / "policies"


def import_example(db: str) -> None:
    code, _, err = run_cli("import", "--db", db, "--cluster", str(CLUSTER), "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err


@pytest.fixture
def example_db(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'learnt.db'}"
    import_example(db)
    return db


@pytest.fixture
def exported(example_db: str, tmp_path: Path) -> Path:
    code, _, err = run_cli("export", "--db", example_db, "--output-dir", str(tmp_path / "exported"))
    assert code == 0, err
    return tmp_path / "exported"


def tag_attributes(page: str) -> list[dict[str, str | None]]:
    """Every element's attributes, as a browser's parser reads them (entities decoded)."""
    found: list[dict[str, str | None]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append(dict(attrs))

    Collect().feed(page)
    return found


def service_map(db: str, request: MapRequest, options: Options | None = None) -> ServiceMap:
    with learning_source(db, None, None) as source:
        return build_service_map(source, request, options or Options())


def expected_fates(db: str, proposed: tuple[str, ...], against: tuple[str, ...]) -> dict[str, set[str]]:
    """What ``diff --db`` says of the same change, as data-edge names per fate."""
    with learning_source(db, None, None) as source:
        impact = review_change(DiffRequest(proposed=proposed, against=against), source, Options()).impact
    name = "{0.src} -> {0.dst} {0.port}/{0.protocol}".format
    return {"cut": {name(g.connection) for g in impact.breaking}, "new": {name(g.connection) for g in impact.opening},
            "unobserved": {name(o.connection) for o in impact.opened}, "denied": {name(c) for c in impact.denied}}


def by_fate(result: ServiceMap) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {fate.value: set() for fate in Fate}
    for edge in result.edges:
        assert edge.fate is not None
        found[edge.fate.value].add(edge.key)
    return found


def test_every_workload_and_edge_learnt_is_on_the_map(store_url: str) -> None:
    import_example(store_url)
    with learning_source(store_url, None, None) as source:
        learned = source.learned()
    result = service_map(store_url, MapRequest())
    workloads = {n.id for n in result.nodes if n.kind.value == "workload"}
    assert workloads == {f"{w.namespace}/{w.kind}/{w.name}" for w in learned.workloads}
    assert {e.key for e in result.edges} == {e.describe() for e in learned.edges}
    assert all(e.fate is None for e in result.edges) and result.change is None
    auth = next(n for n in result.nodes if n.id == "booking/Deployment/auth")
    (text,) = auth.policies.values()  # its own synthesized policy, with the rules' provenance
    assert "name: auth-netpol-gen" in text and "# egress[0] allows" in text
    names = {n.label for n in result.nodes if n.kind.value == "external"}
    assert "oauth2.googleapis.com" in names  # external peers by the DNS name they were resolved from


def test_fates_are_the_diffs_impact(example_db: str, exported: Path) -> None:
    """The reverse of the demo's change (the hand-written set replacing the export) cuts recorded
    connections and opens never-observed ones: every fate but 'denied' occurs."""
    request = MapRequest(proposed=(str(IN_FORCE),), against=(str(exported),))
    result = service_map(example_db, request)
    found = by_fate(result)
    expected = expected_fates(example_db, (str(IN_FORCE),), (str(exported),))
    assert expected["cut"] and expected["unobserved"]
    for fate in ("cut", "new", "unobserved", "denied"):
        assert found[fate] == expected[fate], fate
    changed = set().union(*expected.values())
    assert found["allowed"] == {e.key for e in result.edges} - changed
    assert all(e.connections == 0 for e in result.edges if e.fate is Fate.UNOBSERVED)
    assert any("BREAKS" in line for line in result.summary)


def test_the_synthesized_set_against_the_hand_written_one(example_db: str) -> None:
    result = service_map(example_db, MapRequest(against=(str(IN_FORCE),)))
    found, expected = by_fate(result), expected_fates(example_db, (), (str(IN_FORCE),))
    assert expected["new"]
    for fate in ("cut", "new", "unobserved", "denied"):
        assert found[fate] == expected[fate], fate
    web = next(n for n in result.nodes if n.id == "booking/Deployment/web")
    assert "booking/web-netpol-gen" in web.policies and "booking/web-from-ingress" in web.in_force


def test_namespace_limits_the_map_to_its_workloads_and_their_peers(example_db: str) -> None:
    result = service_map(example_db, MapRequest(), Options(namespaces=frozenset({"monitoring"})))
    workloads = {n.id for n in result.nodes if n.kind.value == "workload"}
    assert "monitoring/StatefulSet/prometheus" in workloads
    assert all(n.startswith("monitoring/") or any(e.dst == n for e in result.edges) for n in workloads)
    assert "booking/Deployment/auth" in workloads  # scraped by prometheus
    assert "booking/Deployment/redis" not in workloads and "booking/CronJob/nightly-report" not in workloads
    assert all("monitoring/" in e.src or "monitoring/" in e.dst for e in result.edges)


def test_the_layout_keeps_every_node_and_edge_and_draws_unobserved_dashed(example_db: str, exported: Path) -> None:
    result = service_map(example_db, MapRequest(proposed=(str(IN_FORCE),), against=(str(exported),)))
    dot = to_dot(result)
    assert len(re.findall(r"^\s+n\d+ -> n\d+ ", dot, re.M)) == len(result.edges)
    dashed = len(re.findall(r'style="dashed"', dot))
    assert dashed == sum(1 for e in result.edges if e.fate is Fate.UNOBSERVED) > 0
    assert dot.count("subgraph cluster_") == len(result.namespaces) + 2  # + nodes, outside the cluster


def test_map_command_writes_the_page_and_prints_the_summary(example_db: str, tmp_path: Path) -> None:
    output = tmp_path / "map.html"
    code, out, err = run_cli("map", "--db", example_db, "--against", str(IN_FORCE), "--output", str(output))
    assert code == 0, err
    page = output.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-workload="booking/Deployment/auth"' in page
    fates = {a["data-edge"]: a.get("data-fate") for a in tag_attributes(page) if "data-edge" in a}
    assert fates["booking/Deployment/auth -> booking/Deployment/redis 6379/TCP"] == "new"
    assert "Breaks nothing seen" in err and f"map: {output}" in err and out == ""
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to load from anywhere


def test_map_from_a_running_serve_is_the_map_of_its_store(example_db: str, exported: Path, tmp_path: Path) -> None:
    """``serve`` as its own process over the imported store stands in for the in-cluster store; ``map
    --server`` reads what was learnt over HTTP and must draw exactly what ``map --db`` draws."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    serve = Serve(example_db, f"127.0.0.1:{free_port()}", tmp_path / "token", tmp_path / "serve.log").start()
    try:
        for args in ([], ["--against", str(IN_FORCE)], ["--proposed", str(IN_FORCE), "--against", str(exported)]):
            remote, local = tmp_path / "remote.html", tmp_path / "local.html"
            code, _, err = run_cli("map", "--server", serve.url, "--token", TOKEN, *args, "--output", str(remote))
            assert code == 0, err
            local_run = run_cli("map", "--db", example_db, *args, "--output", str(local))
            assert local_run.exit_code == 0, local_run.stderr
            assert remote.read_text() == local.read_text(), args
            assert err.replace(str(remote), str(local)) == local_run.stderr
        page = remote.read_text()  # the last: the change that cuts
        assert 'data-workload="booking/Deployment/auth"' in page and 'data-fate="cut"' in page
        refused = tmp_path / "refused.html"
        code, _, err = run_cli("map", "--server", serve.url, "--token", "not-the-token", "--output", str(refused))
        assert code == 2 and "refused the token" in err and len(err.strip().splitlines()) == 1
        assert not refused.exists()
    finally:
        serve.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--proposed", str(IN_FORCE)], "--proposed needs the set it would replace"),
    (["--against", str(IN_FORCE), "--against-cluster"], "--against and --against-cluster exclude each other"),
    (["--against", str(CLUSTER)], "kind"),
    (["--server", "http://127.0.0.1:9"], "--server needs --token"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(example_db: str, tmp_path: Path, args: list[str],
                                                          message: str) -> None:
    output = tmp_path / "map.html"
    db = [] if "--server" in args else ["--db", example_db]
    code, _, err = run_cli("map", *db, *args, "--output", str(output))
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not output.exists()
