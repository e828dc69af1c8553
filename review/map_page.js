// The service map page: pan and zoom, search, namespace and fate filters, and a side panel per
// workload and per edge. Everything it shows comes from the JSON in #map-data and the SVG's data-*
// hooks; it loads nothing and needs no library.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const viewport = document.getElementById("viewport");
  const svg = viewport.querySelector("svg");
  const panel = document.getElementById("panel");
  const nodesById = new Map(data.nodes.map((n) => [n.id, n]));
  const edgesByKey = new Map(data.edges.map((e) => [e.key, e]));
  const nodeEls = new Map([...svg.querySelectorAll("g[data-node]")].map((g) => [g.dataset.node, g]));
  const edgeEls = [...svg.querySelectorAll("g[data-edge]")];

  // --- pan and zoom: the SVG's viewBox is the camera ------------------------------------------
  const full = svg.viewBox.baseVal;
  const home = { x: full.x, y: full.y, w: full.width, h: full.height };
  let view = { ...home };
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  function apply() { svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`); }
  function scale() {
    const r = svg.getBoundingClientRect();
    return Math.max(view.w / r.width, view.h / r.height);
  }
  function toGraph(clientX, clientY) {
    const r = svg.getBoundingClientRect();
    const s = scale();
    const cx = view.x + view.w / 2 + (clientX - (r.left + r.width / 2)) * s;
    const cy = view.y + view.h / 2 + (clientY - (r.top + r.height / 2)) * s;
    return [cx, cy];
  }
  function zoom(factor, clientX, clientY) {
    const [gx, gy] = toGraph(clientX, clientY);
    const w = Math.min(Math.max(view.w * factor, home.w / 200), home.w * 4);
    const f = w / view.w;
    view = { x: gx - (gx - view.x) * f, y: gy - (gy - view.y) * f, w: w, h: view.h * f };
    apply();
  }
  viewport.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    zoom(Math.exp(ev.deltaY * 0.0015), ev.clientX, ev.clientY);
  }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, moved: false, view: { ...view }, s: scale() };
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true;
    viewport.classList.add("dragging");
    view = { ...drag.view, x: drag.view.x - dx * drag.s, y: drag.view.y - dy * drag.s };
    apply();
  });
  window.addEventListener("pointerup", () => {
    viewport.classList.remove("dragging");
    setTimeout(() => { drag = null; }, 0);
  });
  // An element's box in the SVG's own coordinates (the viewBox's): getBBox() is in the element's,
  // which Graphviz's top group translates by the whole graph's height.
  function graphBox(el) {
    const b = el.getBBox();
    const m = svg.getScreenCTM().inverse().multiply(el.getScreenCTM());
    const a = new DOMPoint(b.x, b.y).matrixTransform(m);
    const c = new DOMPoint(b.x + b.width, b.y + b.height).matrixTransform(m);
    return { x: Math.min(a.x, c.x), y: Math.min(a.y, c.y), width: Math.abs(c.x - a.x), height: Math.abs(c.y - a.y) };
  }
  function focusOn(el) {
    const b = graphBox(el);
    const w = Math.max(b.width * 6, home.w / 8);
    const h = w * (view.h / view.w);
    view = { x: b.x + b.width / 2 - w / 2, y: b.y + b.height / 2 - h / 2, w: w, h: h };
    apply();
  }
  document.getElementById("fit").addEventListener("click", () => { view = { ...home }; apply(); });
  document.getElementById("zoom-in").addEventListener("click", () => {
    const r = svg.getBoundingClientRect(); zoom(0.7, r.left + r.width / 2, r.top + r.height / 2);
  });
  document.getElementById("zoom-out").addEventListener("click", () => {
    const r = svg.getBoundingClientRect(); zoom(1.4, r.left + r.width / 2, r.top + r.height / 2);
  });

  // --- filters: namespaces, fates, search ----------------------------------------------------------
  const hiddenNamespaces = new Set();
  const hiddenFates = new Set();
  let query = "";
  function nodeVisible(id) {
    const node = nodesById.get(id);
    return !(node && node.namespace !== null && hiddenNamespaces.has(node.namespace));
  }
  function matches(node) {
    if (!query) return true;
    return [node.id, node.label, node.detail].some((s) => s.toLowerCase().includes(query));
  }
  function refresh() {
    const matched = new Set();
    for (const [id, g] of nodeEls) {
      const node = nodesById.get(id);
      g.classList.toggle("hidden", !nodeVisible(id));
      const hit = matches(node);
      if (hit && query) matched.add(id);
      g.classList.toggle("match", hit && !!query);
      g.classList.toggle("dim", !!query && !hit);
    }
    for (const g of edgeEls) {
      const shown = nodeVisible(g.dataset.src) && nodeVisible(g.dataset.dst) && !hiddenFates.has(g.dataset.fate);
      g.classList.toggle("hidden", !shown);
      g.classList.toggle("dim", !!query && !(matched.has(g.dataset.src) || matched.has(g.dataset.dst)));
    }
    for (const g of svg.querySelectorAll("g[data-group]")) {
      g.classList.toggle("hidden", hiddenNamespaces.has(g.dataset.group));
    }
    document.getElementById("match-count").textContent = query ? `${matched.size} match${matched.size === 1 ? "" : "es"}` : "";
    return matched;
  }
  const search = document.getElementById("search");
  search.addEventListener("input", () => { query = search.value.trim().toLowerCase(); refresh(); });
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const first = [...refresh()][0];
    if (first) { focusOn(nodeEls.get(first)); showNode(first); }
  });
  for (const box of document.querySelectorAll("input[data-namespace-toggle]")) {
    box.addEventListener("change", () => {
      const ns = box.dataset.namespaceToggle;
      if (box.checked) hiddenNamespaces.delete(ns); else hiddenNamespaces.add(ns);
      refresh();
    });
  }
  for (const chip of document.querySelectorAll("[data-fate-toggle]")) {
    chip.addEventListener("click", () => {
      const fate = chip.dataset.fateToggle;
      if (hiddenFates.has(fate)) hiddenFates.delete(fate); else hiddenFates.add(fate);
      chip.classList.toggle("off", hiddenFates.has(fate));
      refresh();
    });
  }

  // --- the side panel --------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c);
    return e;
  }
  function when(ts) { return ts === null ? "unknown" : new Date(ts * 1000).toISOString().replace(".000", ""); }
  function fateBadge(fate) { return el("span", { class: `fate ${fate || "learnt"}` }, fate || "learnt"); }
  function yaml(text) {
    const pre = el("pre", { class: "policy" });
    for (const line of text.split("\n")) {
      const comment = line.trimStart().startsWith("#");
      pre.append(comment ? el("span", { class: "comment" }, line) : line, "\n");
    }
    return pre;
  }
  function policies(title, byKey, empty) {
    const keys = Object.keys(byKey);
    const out = [el("h3", {}, title)];
    if (!keys.length) out.push(el("p", { class: "empty" }, empty));
    for (const key of keys) out.push(yaml(byKey[key]));
    return out;
  }
  function edgeTable(edges, otherEnd) {
    if (!edges.length) return el("p", { class: "empty" }, "none");
    const table = el("table", {});
    for (const e of edges) {
      const count = e.connections ? `×${e.connections}` : "never seen";
      const peer = nodesById.get(e[otherEnd]);
      const name = peer && peer.kind !== "workload" ? `${peer.label} (${peer.detail})` : e[otherEnd];
      const row = el("tr", { "data-edge-row": e.key, title: e.key },
        el("td", { class: "peer" }, name), el("td", {}, `${e.port}/${e.protocol}`), el("td", {}, count),
        el("td", {}, fateBadge(e.fate)));
      row.addEventListener("click", () => showEdge(e.key));
      table.append(row);
    }
    return table;
  }
  // Selecting a box or an arrow dims everything but it and its neighbours: a dense map stays legible.
  function select(g, ends) {
    for (const s of svg.querySelectorAll(".selected, .near")) s.classList.remove("selected", "near");
    svg.classList.toggle("focus", !!g);
    if (!g) return;
    g.classList.add("selected");
    const near = new Set(ends);
    for (const e of edgeEls) {
      if (ends.length === 1 ? near.has(e.dataset.src) || near.has(e.dataset.dst) : e === g) {
        e.classList.add("near");
        near.add(e.dataset.src).add(e.dataset.dst);
      }
    }
    for (const id of near) { const n = nodeEls.get(id); if (n) n.classList.add("near"); }
  }
  function open(children) {
    panel.replaceChildren(el("button", { class: "close", id: "panel-close", title: "Close (Esc)" }, "×"), ...children);
    panel.querySelector("#panel-close").addEventListener("click", close);
    document.body.classList.add("panel-open");
    panel.scrollTop = 0;
  }
  function close() { document.body.classList.remove("panel-open"); select(null, []); }
  function showNode(id) {
    const node = nodesById.get(id);
    const out = data.edges.filter((e) => e.src === id);
    const inc = data.edges.filter((e) => e.dst === id);
    const seen = [...out, ...inc].filter((e) => e.connections);
    const first = seen.map((e) => e.first_seen).filter((t) => t !== null).sort()[0];
    const last = seen.map((e) => e.last_seen).filter((t) => t !== null).sort().pop();
    const where = node.namespace === null ? node.detail : `${node.detail} in ${node.namespace}` +
      (node.pods ? `, ${node.pods} pod${node.pods === 1 ? "" : "s"} seen` : "");
    const children = [
      el("h2", { "data-panel-node": id }, id),
      el("div", { class: "meta" }, where),
      el("div", { class: "meta" }, seen.length ? `first seen ${when(first ?? null)}, last seen ${when(last ?? null)}` : "no traffic seen"),
      el("h3", {}, `Calls (${out.length})`), edgeTable(out, "dst"),
      el("h3", {}, `Called by (${inc.length})`), edgeTable(inc, "src"),
    ];
    if (node.kind === "workload") {
      const title = data.change ? "Proposed policy" : "Policy (export --explain)";
      children.push(...policies(title, node.policies, "no policy selects this workload"));
      if (data.change) children.push(...policies("In force now", node.in_force, "no policy in force selects it"));
    }
    open(children);
    select(nodeEls.get(id), [id]);
  }
  function showEdge(key) {
    const e = edgesByKey.get(key);
    const children = [
      el("h2", {}, key), el("div", { class: "meta" }, fateBadge(e.fate)),
      el("div", { class: "meta" }, e.connections
        ? `${e.connections} connection${e.connections === 1 ? "" : "s"}, first seen ${when(e.first_seen)}, last seen ${when(e.last_seen)}`
        : "never seen in the recorded traffic"),
    ];
    if (e.now.length) children.push(el("h3", {}, "Now"), el("div", { class: "reasons" }, e.now.join("; ")));
    if (e.proposed.length) children.push(el("h3", {}, "Proposed"), el("div", { class: "reasons" }, e.proposed.join("; ")));
    for (const end of [e.src, e.dst]) {
      const link = el("button", {}, `show ${end}`);
      link.addEventListener("click", () => showNode(end));
      children.push(el("p", {}, link));
    }
    open(children);
    select(edgeEls.find((g) => g.dataset.edge === key), [e.src, e.dst]);
  }
  for (const [id, g] of nodeEls) {
    g.addEventListener("click", (ev) => { if (drag && drag.moved) return; ev.stopPropagation(); showNode(id); });
  }
  for (const g of edgeEls) {
    g.addEventListener("click", (ev) => { if (drag && drag.moved) return; ev.stopPropagation(); showEdge(g.dataset.edge); });
  }
  document.body.classList.toggle("dense", edgeEls.length > 400);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") close(); });
  new ResizeObserver(apply).observe(viewport);
  apply();
})();
