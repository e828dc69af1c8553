"""``diff --format markdown``'s Mermaid chart, parsed and drawn by Mermaid itself (the npm registry's
``mermaid``, fetched by ``make mermaid``; the tests run offline) in headless Chromium: it stands in
for GitHub or GitLab drawing the ```` ```mermaid ```` block of a pull-request comment. Mermaid runs
with its default limits (text size, edge count), which are the hosts' too.

The chart comes from the command's markdown output; what it should show comes from the library
(:func:`changed_edges` of the same diff), read back from the SVG Mermaid drew: a node per end, an
edge per changed connection with its label, arrow, line and colour.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.evaluator.impact import Connection, FlowChange, Impact, OpenedConnection
from netpol_gen.review.diff import DiffRequest, review_change
from netpol_gen.review.map_model import Fate
from netpol_gen.review.render_mermaid import MAX_EDGES, ChangedEdge, changed_edges, flowchart
from netpol_gen.synthesizer import Options
from tests.browser import Page, skip
from tests.cli import run_cli
from tests.test_diff import CLUSTER, DROP_RULE, FLOWS, IN_FORCE, OPENS_MORE

ROOT = Path(__file__).resolve().parent.parent
# What a drawn edge shows of its fate: words of its label, its arrow head, its line, its colour.
DRAWN = {Fate.CUT: ("CUT", "crossEnd", "solid", "#dc2626"),
         Fate.NEW: ("newly allowed", "pointEnd", "thick", "#d97706"),
         Fate.UNOBSERVED: ("never seen, opened", "pointEnd", "dotted", "#7c3aed")}

# Parse (the error a host would show instead of the chart), then draw, then read the SVG back:
# node ids are "chart-flowchart-<our id>-<n>", edge paths "chart-L_<src id>_<dst id>_<n>".
RENDER = """async (source) => {
  mermaid.initialize({startOnLoad: false, securityLevel: "strict"});
  try { await mermaid.parse(source); } catch (error) { return {error: String(error)}; }
  const {svg} = await mermaid.render("chart", source);
  const out = document.getElementById("out");
  out.innerHTML = svg;
  const nodes = {};
  for (const g of out.querySelectorAll("g.node")) nodes[g.id.replace(/^chart-flowchart-|-\\d+$/g, "")] = g.textContent;
  const edges = [...out.querySelectorAll("path.flowchart-link")].map(p => ({
    id: p.id, classes: p.getAttribute("class"), style: p.getAttribute("style") || "",
    marker: p.getAttribute("marker-end") || ""}));
  const labels = [...out.querySelectorAll("g.edgeLabel")].map(g => g.textContent);
  return {nodes, edges, labels, errorDiagram: out.querySelector(".error-icon") !== null};
}"""


def mermaid_js() -> Path:
    """The Mermaid build ``make mermaid`` fetched ($NETPOL_GEN_MERMAID_JS, as ``make test`` sets it)."""
    given = os.environ.get("NETPOL_GEN_MERMAID_JS")
    found = [Path(given)] if given else sorted((ROOT / "build" / "npm").glob("mermaid-*/mermaid.min.js"))
    if not found or not found[-1].is_file():
        skip(f"no Mermaid build at {given or ROOT / 'build/npm/mermaid-*/mermaid.min.js'}: `make mermaid` fetches it "
             f"from the npm registry")
    return found[-1]


@pytest.fixture(scope="module")
def mermaid(browser: Any) -> Iterator[Page]:
    """A blank page with Mermaid loaded from the file (inline: the page fetches nothing)."""
    page = Page(browser)
    page.page.set_content('<!DOCTYPE html><html><body><div id="out"></div></body></html>')
    page.page.add_script_tag(path=str(mermaid_js()))
    try:
        yield page
    finally:
        page.close()


def render(page: Page, source: str) -> dict[str, Any]:
    result: dict[str, Any] = page.page.evaluate(RENDER, source)
    assert page.errors == [] and page.requests == [], (page.errors, page.requests)
    return result


def drawn(page: Page, source: str) -> dict[str, Any]:
    """What Mermaid drew of ``source``, failing on a parse error or an error diagram."""
    result = render(page, source)
    assert "error" not in result, result["error"]
    assert not result["errorDiagram"]
    return result


def markdown_chart(*args: str) -> str:
    """The one Mermaid block of ``diff --format markdown``."""
    code, out, err = run_cli("diff", *args, "--format", "markdown")
    assert code in (1, 3), err
    (chart,) = re.findall(r"^```mermaid\n(.*?)^```$", out, re.M | re.S)
    return str(chart)


def assert_draws(result: dict[str, Any], edges: list[ChangedEdge]) -> None:
    """Each of ``edges`` drawn in order between its two ends, with its fate's label, arrow, line, colour."""
    names = result["nodes"]
    ends = [re.fullmatch(r"chart-L_(\w+?)_(\w+?)_\d+", e["id"]) for e in result["edges"]]
    assert all(ends), [e["id"] for e in result["edges"]]
    assert [(names[m[1]], names[m[2]]) for m in ends if m] == [(e.connection.src, e.connection.dst) for e in edges]
    labels = []
    for edge, path in zip(edges, result["edges"], strict=True):
        words, marker, line, colour = DRAWN[edge.fate]
        c = edge.connection
        labels.append(f"{words}: {c.protocol}/{c.port}" + (f", {edge.flows} flows" if edge.flows else ""))
        assert marker in path["marker"] and f"edge-{'thickness' if line == 'thick' else 'pattern'}-{line}" in (
            path["classes"]), (edge, path)
        assert f"stroke:{colour}" in path["style"].replace(" ", ""), (edge, path)
    assert sorted(result["labels"]) == sorted(labels)


@pytest.mark.parametrize(("proposed", "fates"), [
    (DROP_RULE, {Fate.CUT}),
    (OPENS_MORE, {Fate.NEW, Fate.UNOBSERVED}),
])
def test_the_diffs_chart_draws_every_changed_edge(mermaid: Page, proposed: Path, fates: set[Fate]) -> None:
    files = ("--cluster", str(CLUSTER), "--flows", str(FLOWS), "--against", str(IN_FORCE))
    chart = markdown_chart(*files, "--proposed", str(proposed))
    request = DiffRequest(proposed=(str(proposed),), against=(str(IN_FORCE),), clusters=(str(CLUSTER),),
                          flows=str(FLOWS))
    expected = changed_edges(review_change(request, None, Options()).impact)
    assert {e.fate for e in expected} == fates and len(expected) <= MAX_EDGES
    result = drawn(mermaid, chart)
    assert sorted(result["nodes"].values()) == sorted({end for e in expected for end in (e.connection.src,
                                                                                          e.connection.dst)})
    assert_draws(result, expected)


def test_a_large_change_is_cut_to_a_chart_the_hosts_draw(mermaid: Page) -> None:
    """600 changed edges: drawn unbounded, Mermaid's default edge limit (500) refuses the chart; the
    bounded one shows the first MAX_EDGES and a node saying how many more there are."""
    workloads = [f"shop/Deployment/w{i}" for i in range(40)]
    opened = [OpenedConnection(Connection(src, dst, port, "TCP"), None, "denied", "allowed")
              for src in workloads[:20] for dst in workloads[20:] for port in (80, 443)][:600]
    cut = [FlowChange(Connection(workloads[0], workloads[1], 5432, "TCP"), flows=7)]
    impact = Impact(breaking=cut, opened=opened)
    assert "limit" in render(mermaid, str(flowchart(impact, max_edges=len(opened) + 1))).get("error", "")
    result = drawn(mermaid, str(flowchart(impact)))
    edges = changed_edges(impact)
    assert_draws(result, edges[:MAX_EDGES])
    assert f"+{601 - MAX_EDGES} more changed edges: see the tables below" in result["nodes"].values()


def test_names_with_mermaid_and_html_syntax_are_drawn_as_written(mermaid: Page) -> None:
    """Addresses and names reach the chart from recorded traffic: none may end a label, become markup
    or a Markdown string, or close the block."""
    names = ['a"b', "x#y;z", "<b>bold</b>", "p|q", "end", "%% not a comment", "a-->b", "[sq]", "{curly}",
             "(round)", "amp&amp;x", "`tick`", "```", "back\\slash", "a:::b", "style", "click", "ünïcode"]
    impact = Impact(breaking=[FlowChange(Connection(src, dst, 80, "TCP"), flows=1)
                              for src, dst in itertools.pairwise(names)])
    chart = str(flowchart(impact))
    assert "```" not in chart  # the chart cannot end its own fenced block
    result = drawn(mermaid, chart)
    assert sorted(result["nodes"].values()) == sorted(names)
    assert_draws(result, changed_edges(impact))


def test_a_broken_chart_is_reported_not_drawn(mermaid: Page) -> None:
    """The check can fail: Mermaid refuses a label that a bare quote ends early."""
    result = render(mermaid, 'flowchart LR\n  n0["a"b"] --> n1["c"]\n')
    assert "Parse error" in result["error"]
