"""The map of a 300-workload cluster, in headless Chromium: it stands in for a reviewer opening the map
of a real production cluster. The store is a generated scenario (bench/gen_cluster: 20 namespaces,
325 workloads, 1,264 learnt edges) imported into SQLite; the layout is Graphviz's, as ``map`` writes it.

Readable means here: no two boxes overlap, each box sits in its own namespace's frame and the frames
do not overlap, every name fits inside its box, and searching a workload brings it into view with
its name large enough to read; the page stays light (a bounded number of elements per box and arrow).
Screenshots (1400x900) go to build/artifacts/.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bench import gen_cluster
from netpol_gen.service.source import learning_source
from tests.browser import Page
from tests.cli import run_cli

MIN_WORKLOADS = 300
ELEMENTS_PER_ITEM = 8  # DOM elements per box + arrow (5.3 measured: a group, a shape, 1-2 texts each)
READABLE_PX = 10.0  # a workload's name, on screen, once searched for

# Every box (its shape's box, its texts' boxes, its namespace) and every frame, in SVG units.
GEOMETRY = """() => {
  const box = e => { const b = e.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; };
  const shape = g => g.querySelector("path, polygon, rect");
  return {
    nodes: [...document.querySelectorAll("g[data-node]")].map(g => ({
      id: g.dataset.node, namespace: g.dataset.namespace, box: box(shape(g)),
      texts: [...g.querySelectorAll("text")].map(box)})),
    frames: [...document.querySelectorAll("g[data-group]")].map(g => ({name: g.dataset.group, box: box(shape(g))})),
    elements: document.getElementsByTagName("*").length};
}"""

Box = list[float]


def overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner: Box, outer: Box, slack: float = 0.5) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack and inner[2] <= outer[2] + slack
            and inner[3] <= outer[3] + slack)


@pytest.fixture(scope="module")
def big_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    work = tmp_path_factory.mktemp("map-scale")
    gen_cluster.generate(work, namespaces=20, pods=330, nodes=4, flows=2500, shape=gen_cluster.Shape(backends=1))
    db = f"sqlite:///{work / 'learnt.db'}"
    code, _, err = run_cli("import", "--db", db, "--cluster", str(work / "cluster.yaml"),
                           "--flows", str(work / "flows.jsonl"))
    assert code == 0, err
    code, _, err = run_cli("map", "--db", db, "--output", str(work / "map.html"))
    assert code == 0, err
    with learning_source(db, None, None) as source:
        workloads = len(source.learned().workloads)
    assert workloads >= MIN_WORKLOADS
    return work / "map.html", workloads


def test_a_300_workload_map_is_laid_out_without_overlaps(browser: Any, big_map: tuple[Path, int]) -> None:
    path, workloads = big_map
    page = Page(browser, path)
    assert page.errors == [] and page.requests == [page.url]
    geometry = page.page.evaluate(GEOMETRY)
    nodes, frames = geometry["nodes"], geometry["frames"]
    assert len(page.attributes("[data-workload]", "data-workload")) == workloads
    edges = len(page.attributes("[data-edge]", "data-edge"))
    assert geometry["elements"] <= ELEMENTS_PER_ITEM * (len(nodes) + edges), (geometry["elements"], len(nodes), edges)
    assert [(a["id"], b["id"]) for a, b in itertools.combinations(nodes, 2) if overlap(a["box"], b["box"])] == []
    assert [(a["name"], b["name"]) for a, b in itertools.combinations(frames, 2) if overlap(a["box"], b["box"])] == []
    for node in nodes:
        (frame,) = [f for f in frames if inside(node["box"], f["box"])]
        assert frame["name"] == node["namespace"] or not node["namespace"], (node["id"], frame["name"])
        assert node["texts"] and all(inside(text, node["box"]) for text in node["texts"]), node["id"]
    page.screenshot("map-300-workloads.png")


def test_searching_a_workload_of_300_brings_it_into_view_readably(browser: Any, big_map: tuple[Path, int]) -> None:
    path, _ = big_map
    page = Page(browser, path)
    target = page.attributes("[data-workload]", "data-workload")[-1]
    name = target.rsplit("/", 1)[1]
    page.page.fill("#search", target)
    page.page.press("#search", "Enter")
    assert page.page.locator("#panel h2").inner_text() == target
    shown = page.page.locator(f'g[data-workload="{target}"]')
    label = shown.locator("text").first
    assert label.text_content() == name
    box, view = label.bounding_box(), page.page.locator("#viewport").bounding_box()
    assert box is not None and view is not None
    assert box["height"] >= READABLE_PX, box
    assert (view["x"] <= box["x"] and box["x"] + box["width"] <= view["x"] + view["width"]
            and view["y"] <= box["y"] and box["y"] + box["height"] <= view["y"] + view["height"]), (box, view)
    assert page.errors == []
    page.screenshot("map-300-workloads-search.png")
