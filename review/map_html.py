"""The service map as one self-contained HTML file: the laid-out SVG, the map's data as JSON, and the
page's style and script, all inline. It loads nothing (no fonts, scripts or images from anywhere),
so it opens in an air-gapped browser and can be attached to a ticket.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from netpol_gen.review.map_layout import layout_svg
from netpol_gen.review.map_model import Fate, ServiceMap

_FATE_TITLES = {Fate.ALLOWED: "still allowed", Fate.NEW: "newly allowed", Fate.CUT: "cut",
                Fate.UNOBSERVED: "opened, never seen", Fate.DENIED: "denied before and after"}
# No network at all, and inline code only: a tampered or copied page cannot load anything either.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _asset(name: str) -> str:
    return resources.files("netpol_gen.review").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(value: object) -> str:
    """JSON safe inside a <script> element (no ``</script>`` or comment opener can end it early)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def _legend(service_map: ServiceMap) -> str:
    if service_map.change is None:
        return '<span class="chip"><span class="swatch"></span>learnt edge: port/protocol &times;connections</span>'
    counts = service_map.fate_counts()
    return "".join(
        f'<span class="chip" data-fate-toggle="{fate.value}" title="show/hide"><span class="swatch"></span>'
        f"{_FATE_TITLES[fate]} <b>{counts[fate.value]}</b></span>"
        for fate in Fate if counts[fate.value] or fate is not Fate.DENIED)


def _namespace_filter(service_map: ServiceMap) -> str:
    boxes = "".join(f'<label><input type="checkbox" checked data-namespace-toggle="{html.escape(ns)}"> '
                    f"{html.escape(ns)}</label>" for ns in service_map.namespaces)
    return (f'<details class="namespaces"><summary class="chip">namespaces '
            f"({len(service_map.namespaces)})</summary><div class=\"list\">{boxes}</div></details>")


def render_html(service_map: ServiceMap) -> str:
    """The page for ``service_map``."""
    title = "netpol-gen: what a change does" if service_map.change else "netpol-gen: what was learnt"
    change = f'<span class="change">{html.escape(service_map.change)}</span>' if service_map.change else ""
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in service_map.summary)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_asset("map_page.css")}</style>
</head>
<body>
<header>
  <h1>{html.escape(title)}</h1>{change}
  <ul class="summary">{summary}</ul>
  <div class="controls">
    <input type="search" id="search" autocomplete="off"
           placeholder="Search workloads, peers, namespaces (Enter: go to)">
    <span id="match-count" class="change"></span>
    {_namespace_filter(service_map)}
    {_legend(service_map)}
    <button id="zoom-in" title="Zoom in">+</button><button id="zoom-out" title="Zoom out">&minus;</button>
    <button id="fit" title="Show everything">fit</button>
  </div>
</header>
<main id="viewport">{layout_svg(service_map)}
  <div class="hint">scroll to zoom &middot; drag to pan &middot; click a box or an arrow</div></main>
<aside id="panel" aria-live="polite"></aside>
<script type="application/json" id="map-data">{_json_for_script(service_map.to_dict())}</script>
<script>{_asset("map_page.js")}</script>
</body>
</html>
"""
