"""The service map page in a real headless Chromium (Debian's ``chromium``, driven by playwright),
offline: it stands in for a reviewer opening the attached map.html. The store is the ticket-booking
capture imported (SQLite); the change is the example's hand-written set replacing the export, which
cuts, newly allows and opens connections. Expected fates come from ``diff``'s library call.

Screenshots (1400x900) are kept under build/artifacts/ for a person to look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netpol_gen.service.source import learning_source
from tests.browser import Page
from tests.cli import run_cli
from tests.test_map import IN_FORCE, expected_fates, import_example


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    work = tmp_path_factory.mktemp("map")
    db = f"sqlite:///{work / 'learnt.db'}"
    import_example(db)
    code, _, err = run_cli("export", "--db", db, "--output-dir", str(work / "exported"))
    assert code == 0, err
    return db, work


def write_map(db: str, path: Path, *args: str) -> Path:
    code, _, err = run_cli("map", "--db", db, *args, "--output", str(path))
    assert code == 0, err
    return path


def test_the_change_map_loads_offline_and_shows_the_diffs_fates(browser: Any, learnt: tuple[str, Path]) -> None:
    db, work = learnt
    exported = str(work / "exported")
    page = Page(browser, write_map(db, work / "change.html", "--proposed", str(IN_FORCE), "--against", exported))
    assert page.errors == []
    assert page.requests == [page.url]  # the file itself, nothing else
    with learning_source(db, None, None) as source:
        learned = source.learned()
    workloads = page.attributes("[data-workload]", "data-workload")
    assert sorted(workloads) == sorted(f"{w.namespace}/{w.kind}/{w.name}" for w in learned.workloads)
    edges = page.attributes("[data-edge]", "data-edge")
    fates = page.attributes("[data-edge]", "data-fate")
    assert len(edges) == len(set(edges)) == len(fates)
    expected = expected_fates(db, (str(IN_FORCE),), (exported,))
    for fate in ("cut", "new", "unobserved", "denied"):
        assert {e for e, f in zip(edges, fates, strict=True) if f == fate} == expected[fate], fate
    learnt_edges = {e.describe() for e in learned.edges}
    assert {e for e, f in zip(edges, fates, strict=True) if f != "unobserved"} == learnt_edges
    for fate in ("cut", "new", "unobserved"):
        assert page.page.inner_text(f'[data-fate-toggle="{fate}"] b') == str(len(expected[fate]))
    page.screenshot("map-change.png")


def test_clicking_a_workload_shows_its_policy_with_provenance(browser: Any, learnt: tuple[str, Path]) -> None:
    db, work = learnt
    page = Page(browser, write_map(db, work / "learnt.html"))
    assert page.errors == [] and page.requests == [page.url]
    assert page.page.eval_on_selector_all("[data-fate]", "els => els.length") == 0  # no change shown
    page.page.click('[data-workload="booking/Deployment/auth"]')
    panel = page.page.locator("#panel")
    assert panel.is_visible()
    assert panel.locator("h2").inner_text() == "booking/Deployment/auth"
    policy = panel.locator("pre.policy").inner_text()
    assert "name: auth-netpol-gen" in policy and "# egress[0] allows" in policy
    assert "booking/Deployment/redis" in panel.inner_text()  # its edges are listed
    page.screenshot("map-learnt-panel.png")
    page.page.keyboard.press("Escape")
    assert not panel.is_visible()


def test_search_and_namespace_filter(browser: Any, learnt: tuple[str, Path]) -> None:
    db, work = learnt
    page = Page(browser, write_map(db, work / "filters.html"))
    page.page.fill("#search", "redis")
    matched = page.attributes("g.match", "data-node")
    assert matched == ["booking/Deployment/redis"]
    page.page.fill("#search", "")
    page.page.click("details.namespaces summary")
    page.page.uncheck('input[data-namespace-toggle="booking"]')
    hidden = set(page.attributes("g[data-node].hidden", "data-node"))
    assert hidden and all(node.startswith("booking/") for node in hidden)
    hidden_edges = page.attributes("g[data-edge].hidden", "data-edge")
    assert hidden_edges and all("booking/" in e for e in hidden_edges)
    assert page.errors == []
