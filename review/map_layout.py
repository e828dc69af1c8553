"""Lay the service map out with Graphviz and return the SVG, carrying the page's hooks.

``dot`` (layered drawing with clusters) keeps the direction of traffic readable: callers left,
callees right, each namespace one box, the peers outside the workloads in boxes of their own; a map
too dense for it is laid out by ``fdp`` (force-directed, same clusters). Layout runs here, when the
page is written, so the page needs no layout code and stays light with hundreds of workloads. The
SVG's groups get ``data-workload``/``data-node``, ``data-edge`` and ``data-fate`` attributes after
layout (Graphviz writes only ids and classes).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import xml.etree.ElementTree as ET

from netpol_gen.errors import InputError
from netpol_gen.review.map_model import Fate, MapEdge, MapNode, PeerKind, ServiceMap

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
FONT = "DejaVu Sans"
DOT_MAX_EDGES = 500  # past this, dot is not even tried (see _laid_out)
DOT_BUDGET = 30.0  # seconds dot may take before fdp lays the map out instead
FDP_TIMEOUT = 600.0
# One colour per fate (and for the learnt map); the page's legend reads the same table.
EDGE_COLOURS = {None: "#7b8794", Fate.ALLOWED: "#9aa5b1", Fate.NEW: "#d97706", Fate.CUT: "#dc2626",
                Fate.UNOBSERVED: "#7c3aed", Fate.DENIED: "#1f2933"}
EDGE_STYLES = {Fate.UNOBSERVED: "dashed", Fate.DENIED: "dotted"}
NODE_FILLS = {PeerKind.WORKLOAD: "#ffffff", PeerKind.NODE: "#eef2f7", PeerKind.EXTERNAL: "#f3effc",
              PeerKind.UNKNOWN: "#fdf2f2"}
PEER_GROUPS = {PeerKind.NODE: "nodes", PeerKind.EXTERNAL: "outside the cluster", PeerKind.UNKNOWN: "unknown addresses"}
LABEL_EDGES_UP_TO = 400  # past this many edges, labels cost more readability (and layout time) than they give


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_line(node: MapNode, dot_id: str) -> str:
    """A box: the name in bold, below it the kind (a workload's) or what the peer is. A workload no
    policy selects is drawn dashed: it stays open whatever the set allows elsewhere."""
    unselected = node.kind is PeerKind.WORKLOAD and not node.policies
    sub = node.detail if node.kind is PeerKind.WORKLOAD else node.detail.split(" ")[0]
    if unselected:
        sub += " \u00b7 no policy"
    label = f"<<b>{html.escape(node.label)}</b>"
    if sub:
        label += f'<br/><font point-size="9" color="#616e7c">{html.escape(sub)}</font>'
    style = "rounded,filled,dashed" if unselected else "rounded,filled"
    return (f"    {dot_id} [label={label}>, id={_quote(dot_id)}, tooltip={_quote(node.id)}, style={_quote(style)}, "
            f"fillcolor={_quote(NODE_FILLS[node.kind])}];")


def _edge_line(edge: MapEdge, dot_ids: dict[str, str], index: int, labelled: bool) -> str:
    """An arrow. Openings never observed are drawn dashed and unlabelled (the panel and the tooltip
    name the port), with a low weight, so the map of real traffic keeps its shape around them."""
    attrs = {"id": f"e{index}", "color": EDGE_COLOURS[edge.fate], "tooltip": edge.key}
    if edge.fate in EDGE_STYLES:
        attrs["style"] = EDGE_STYLES[edge.fate]
    if edge.fate in (Fate.CUT, Fate.NEW):
        attrs["penwidth"] = "2.2"
    if edge.fate is Fate.UNOBSERVED:
        attrs["weight"] = "0"
    elif labelled:
        count = f" \u00d7{edge.connections}" if edge.connections else ""
        attrs["label"] = f"{edge.port}/{edge.protocol}{count}"
        attrs["fontcolor"] = "#52606d" if edge.fate in (None, Fate.ALLOWED) else EDGE_COLOURS[edge.fate]
    body = ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items())
    return f"  {dot_ids[edge.src]} -> {dot_ids[edge.dst]} [{body}];"


def to_dot(service_map: ServiceMap) -> str:
    """The map as a DOT graph: one cluster per namespace and per kind of peer."""
    dot_ids = {node.id: f"n{i}" for i, node in enumerate(service_map.nodes)}
    groups: dict[str, list[MapNode]] = {}
    for node in service_map.nodes:
        group = node.namespace if node.namespace is not None else PEER_GROUPS[node.kind]
        groups.setdefault(group, []).append(node)
    lines = ["digraph map {",
             f'  graph [rankdir=LR, newrank=true, nodesep=0.25, ranksep=1.1, fontname="{FONT}", fontsize=13, '
             f'bgcolor="transparent", pad=0.3];',
             f'  node [shape=box, style="rounded,filled", fontname="{FONT}", fontsize=11, color="#52606d", '
             f'penwidth=1.2, margin="0.15,0.06"];',
             f'  edge [fontname="{FONT}", fontsize=9, arrowsize=0.7];']
    for index, (name, nodes) in enumerate(groups.items()):
        peers = nodes[0].namespace is None
        lines += [f"  subgraph cluster_{index} {{",
                  f"    label={_quote(name)}; id={_quote(f'ns{index}')}; labeljust=l; style=\"rounded,filled\"; "
                  f"color=\"{'#cbd2d9' if peers else '#9fb3c8'}\"; fillcolor=\"{'#f5f7fa' if peers else '#f0f4f8'}\";"]
        lines += [_node_line(node, dot_ids[node.id]) for node in nodes]
        lines.append("  }")
    labelled = len(service_map.edges) <= LABEL_EDGES_UP_TO
    lines += [_edge_line(edge, dot_ids, i, labelled) for i, edge in enumerate(service_map.edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _run(engine: str, source: str, timeout: float) -> str:
    program = shutil.which(engine)
    if program is None:
        raise InputError(f"Graphviz's `{engine}` is not installed (Debian: apt-get install graphviz); "
                         f"it lays out the map")
    result = subprocess.run([program, "-Tsvg"], input=source, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{engine} failed: {result.stderr.strip()}")
    return result.stdout


def _laid_out(service_map: ServiceMap) -> str:
    """``dot`` where it can finish (its crossing minimisation grows steeply with edges spanning many
    ranks: on generated clusters, 432 edges of 120 workloads took 3.6 s, 715 of 200 took 39 s, 1,264
    of 325 did not finish in 120 s), else ``fdp``, the force-directed engine that keeps the namespace
    clusters (1.7 s for those 1,264)."""
    source = to_dot(service_map)
    if len(service_map.edges) <= DOT_MAX_EDGES:
        try:
            return _run("dot", source, DOT_BUDGET)
        except subprocess.TimeoutExpired:
            pass
    return _run("fdp", source.replace("rankdir=LR, ", "splines=line, ", 1), FDP_TIMEOUT)


def _hook(svg: str, service_map: ServiceMap) -> str:
    """The page's stable hooks on the laid-out groups, by the ids given to ``dot``."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(svg)
    nodes = {f"n{i}": node for i, node in enumerate(service_map.nodes)}
    edges = {f"e{i}": edge for i, edge in enumerate(service_map.edges)}
    namespaces = {f"ns{i}": name for i, name in enumerate(dict.fromkeys(
        n.namespace if n.namespace is not None else PEER_GROUPS[n.kind] for n in service_map.nodes))}
    for group in root.iter(f"{{{SVG_NS}}}g"):
        gid = group.get("id", "")
        for title in group.findall(f"{{{SVG_NS}}}title"):
            group.remove(title)  # the browser would show dot's internal ids as tooltips
        if gid in nodes:
            node = nodes[gid]
            group.set("data-node", node.id)
            if node.kind is PeerKind.WORKLOAD:
                group.set("data-workload", node.id)
            group.set("data-namespace", node.namespace or "")
        elif gid in edges:
            edge = edges[gid]
            group.set("data-edge", edge.key)
            group.set("data-src", edge.src)
            group.set("data-dst", edge.dst)
            if edge.fate is not None:
                group.set("data-fate", edge.fate.value)
        elif gid in namespaces:
            group.set("data-group", namespaces[gid])
    return ET.tostring(root, encoding="unicode")


def layout_svg(service_map: ServiceMap) -> str:
    """The map drawn by ``dot``, as an SVG element with the page's hooks."""
    return _hook(_laid_out(service_map), service_map)
