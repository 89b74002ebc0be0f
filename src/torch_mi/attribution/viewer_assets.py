"""Stylesheet and script of the attribution-graph viewer (inlined into one HTML file, so the
page needs no network and no package data files)."""

CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1a202c; background: #fff; }
header { padding: 8px 14px; border-bottom: 1px solid #e2e8f0; display: flex;
         flex-wrap: wrap; gap: 6px 22px; align-items: center; }
header h1 { font-size: 15px; margin: 0; font-weight: 600; }
header .prompt { font-family: ui-monospace, Menlo, monospace; color: #4a5568;
                 white-space: pre; }
label { display: inline-flex; gap: 6px; align-items: center; }
input[type=range] { width: 160px; }
#stats { color: #4a5568; }
.hint { color: #718096; font-size: 12px; }
.legend { display: inline-flex; gap: 12px; align-items: center; color: #4a5568; }
.legend svg { vertical-align: middle; }
#wrap { overflow: auto; padding: 4px 8px 12px 8px; }
svg text { font-size: 11px; fill: #2d3748; }
text.axis { fill: #718096; font-size: 11px; }
text.token { font-family: ui-monospace, Menlo, monospace; font-size: 12px; fill: #1a202c; }
text.logit-label { font-family: ui-monospace, Menlo, monospace; font-size: 11px; }
line.grid { stroke: #edf2f7; }
path.link { fill: none; }
.node { cursor: pointer; }
.node .shape { stroke: #fff; stroke-width: 1; }
.hidden { display: none; }
.node.dim { opacity: 0.22; }
path.link.dim { opacity: 0.07; }
path.link.onpath { stroke-opacity: 0.9; }
.node.selected .shape { stroke: #000; stroke-width: 2.5; }
.node.path .shape { stroke: #1a202c; stroke-width: 1.5; }
#tip { position: fixed; pointer-events: none; background: #1a202c; color: #f7fafc;
       padding: 7px 9px; border-radius: 5px; font-size: 12px; max-width: 360px;
       display: none; white-space: pre-line; z-index: 10; line-height: 1.45; }
"""

# Kept small and dependency-free. Data comes from the JSON block; every string from it is set
# with textContent (never innerHTML), so node labels cannot inject markup.
JS = r"""
(function () {
"use strict";
const NS = "http://www.w3.org/2000/svg";
const data = JSON.parse(document.getElementById("graph-data").textContent);
const meta = data.metadata, tokens = meta.prompt_tokens;
const COLORS = {"cross layer transcoder": "#319795", "mlp reconstruction error": "#a0aec0",
                "embedding": "#d69e2e", "logit": "#805ad5"};
const POS = "#2b6cb0", NEG = "#c53030";
const ROW_H = 78, GAP = 17, LOGIT_GAP = 64, LEFT = 64, TOP = 62, BOTTOM = 44;

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function rowKey(n) { return n.layer === "E" ? -1 : Number(n.layer); }
const isFixed = (n) => n.feature_type === "embedding" || n.feature_type === "logit";
const gapOf = (n) => (n.feature_type === "logit" ? LOGIT_GAP : GAP);
function shown(s) {  // a token as text: visible whitespace, no raw control characters
  return JSON.stringify(String(s)).slice(1, -1).replace(/ /g, "\u2423")
    .replace(/\\n/g, "\u23ce").replace(/\\t/g, "\u2192");
}

// ---- layout: rows = layers (embeddings at the bottom, logits on top), columns = positions
const nodes = data.nodes.map((n, i) => Object.assign({idx: i}, n));
const byId = new Map();
nodes.forEach((n) => { if (!byId.has(n.node_id)) byId.set(n.node_id, n); });
const rows = [...new Set(nodes.map(rowKey))].sort((a, b) => a - b);
const cells = new Map();
for (const n of nodes) {
  const key = rowKey(n) + "|" + n.ctx_idx;
  if (!cells.has(key)) cells.set(key, []);
  cells.get(key).push(n);
}
// natural column widths from the busiest cell, then spare page width shared out in
// proportion, so dense columns spread their nodes and sparse ones stay narrow
const need = tokens.map(() => 40);
for (const list of cells.values()) {
  const pos = list[0].ctx_idx;
  need[pos] = Math.max(need[pos], list.length * gapOf(list[0]) + 14);
  const rank = (n) => (n.feature_type === "mlp reconstruction error" ? 1 : 0);
  list.sort((a, b) => rank(a) - rank(b) || (a.influence ?? 0) - (b.influence ?? 0));
}
const natural = need.reduce((a, b) => a + b, 0);
const spare = Math.max(0, window.innerWidth - LEFT - 40 - natural);
const colWidth = need.map((w) => w + spare * w / natural);
const colX = [];
let x0 = LEFT;
colWidth.forEach((w, i) => { colX[i] = x0 + w / 2; x0 += w; });
const width = x0 + 24, height = TOP + (rows.length - 1) * ROW_H + BOTTOM;
const rowY = (r) => TOP + (rows.length - 1 - rows.indexOf(r)) * ROW_H;
for (const list of cells.values()) {
  const step = Math.min(3 * gapOf(list[0]), (colWidth[list[0].ctx_idx] - 14) / list.length);
  list.forEach((n, k) => {
    n.x = colX[n.ctx_idx] + (k - (list.length - 1) / 2) * Math.max(step, gapOf(n));
    n.y = rowY(rowKey(n));
  });
}

// ---- drawing
const svg = el("svg", {width: width, height: height, id: "graph"},
               document.getElementById("wrap"));
const grid = el("g", {}, svg), linkLayer = el("g", {id: "links"}, svg);
const nodeLayer = el("g", {id: "nodes"}, svg);
rows.forEach((r) => {
  const y = rowY(r);
  el("line", {x1: LEFT - 6, x2: width - 10, y1: y, y2: y, class: "grid"}, grid);
  const t = el("text", {x: 6, y: y + 4, class: "axis"}, grid);
  t.textContent = r === -1 ? "Emb" : (r > rows[rows.length - 2] && nodes.some(
    (n) => n.feature_type === "logit" && rowKey(n) === r) ? "Logit" : "L" + r);
});
tokens.forEach((tok, i) => {
  const t = el("text", {x: colX[i], y: height - 12, "text-anchor": "middle", class: "token"},
               grid);
  t.textContent = shown(tok);
  const title = el("title", {}, t);
  title.textContent = "position " + i;
});
let maxW = 0;
for (const l of data.links) maxW = Math.max(maxW, Math.abs(l.weight));
maxW = maxW || 1;
const links = [];
const order = data.links.slice().sort((a, b) => Math.abs(a.weight) - Math.abs(b.weight));
const fade = Math.min(1, 12 / Math.sqrt(order.length + 1));  // busy graphs: fainter links
for (const l of order) {
  const s = byId.get(l.source), t = byId.get(l.target);
  if (!s || !t) continue;
  const a = Math.abs(l.weight) / maxW, my = (s.y + t.y) / 2;
  const p = el("path", {class: "link", d: `M${s.x},${s.y} C${s.x},${my} ${t.x},${my} ${t.x},${t.y}`,
    stroke: l.weight >= 0 ? POS : NEG, "stroke-width": (0.4 + 4 * Math.sqrt(a)).toFixed(2),
    "stroke-opacity": ((0.12 + 0.7 * a) * (0.4 + 0.6 * fade)).toFixed(2)}, linkLayer);
  const title = el("title", {}, p);
  title.textContent = `${l.source} \u2192 ${l.target}: ${l.weight.toPrecision(4)}`;
  links.push({s: s, t: t, w: l.weight, a: a, el: p});
}
const out = new Map(), inc = new Map();
nodes.forEach((n) => { out.set(n, []); inc.set(n, []); });
links.forEach((l) => { out.get(l.s).push(l); inc.get(l.t).push(l); });
for (const n of nodes) {
  const size = 4 + 5 * (1 - Math.min(1, n.influence ?? 0.5));
  const g = el("g", {class: "node", "data-id": n.node_id, "data-type": n.feature_type,
                     transform: `translate(${n.x},${n.y})`}, nodeLayer);
  const fill = COLORS[n.feature_type] || "#4a5568";
  if (n.feature_type === "cross layer transcoder") {
    el("circle", {r: size, fill: fill, class: "shape"}, g);
  } else if (n.feature_type === "mlp reconstruction error") {
    el("rect", {x: -4.5, y: -4.5, width: 9, height: 9, fill: fill, class: "shape",
                transform: "rotate(45)"}, g);
  } else {
    el("rect", {x: -7, y: -7, width: 14, height: 14, rx: 3, fill: fill, class: "shape"}, g);
  }
  if (n.feature_type === "logit") {
    const t = el("text", {y: -12, "text-anchor": "middle", class: "logit-label"}, g);
    t.textContent = logitToken(n) + " " + n.token_prob.toFixed(3);
  }
  n.el = g;
  g.addEventListener("mousemove", (ev) => showTip(ev, n));
  g.addEventListener("mouseleave", hideTip);
  g.addEventListener("click", (ev) => { ev.stopPropagation(); select(n); });
}

// ---- tooltip
const tip = document.getElementById("tip");
function fmt(v) { return v === null || v === undefined ? "\u2013" : Number(v).toPrecision(4); }
function logitToken(n) {  // the output token of a logit node, as shown text
  const text = (n.clerp.match(/^Output "(.*)" \(p=/s) || [null, n.clerp])[1];
  // a token that is not valid text alone (a byte piece) is shown by its vocabulary id
  return text.includes("\ufffd") ? "#" + n.node_id.split("_")[1] : shown(text);
}
function label(n) {  // short human name of a node, for lists
  const tok = JSON.stringify(shown(tokens[n.ctx_idx] ?? ""));
  if (n.feature_type === "cross layer transcoder") {
    return `L${n.layer} f${n.node_id.split("_")[1]} @${n.ctx_idx} ${tok}`;
  }
  if (n.feature_type === "mlp reconstruction error") return `error L${n.layer} @${n.ctx_idx} ${tok}`;
  if (n.feature_type === "embedding") return `token ${tok} @${n.ctx_idx}`;
  return `logit "${logitToken(n)}" (p=${n.token_prob.toFixed(3)})`;
}
function tipText(n) {
  const lines = [];
  const tok = JSON.stringify(tokens[n.ctx_idx] ?? "");
  if (n.feature_type === "cross layer transcoder") {
    const feat = n.node_id.split("_")[1];
    lines.push(`feature ${feat} @ layer ${n.layer}, position ${n.ctx_idx} ${tok}`);
    lines.push(`activation ${fmt(n.activation)}   influence ${fmt(n.influence)}`);
  } else if (n.feature_type === "mlp reconstruction error") {
    lines.push(`error node, layer ${n.layer}, position ${n.ctx_idx} ${tok}`);
    lines.push(`influence ${fmt(n.influence)}`);
  } else if (n.feature_type === "embedding") {
    lines.push(`token ${tok} (id ${n.node_id.split("_")[1]}) at position ${n.ctx_idx}`);
    lines.push(`influence ${fmt(n.influence)}`);
  } else {
    lines.push(`logit ${n.clerp}${n.is_target_logit ? "  [top target]" : ""}`);
    lines.push(`token id ${n.feature}, probability ${fmt(n.token_prob)}`);
  }
  if (n.clerp && n.feature_type !== "logit") lines.push(n.clerp);
  const top = (list, end) => list.slice().sort((a, b) => Math.abs(b.w) - Math.abs(a.w))
    .slice(0, 3).map((l) => `  ${l.w >= 0 ? "+" : ""}${l.w.toPrecision(3)}  ${label(l[end])}`);
  if (inc.get(n).length) lines.push(`top inputs (${inc.get(n).length}):`, ...top(inc.get(n), "s"));
  if (out.get(n).length) lines.push(`top outputs (${out.get(n).length}):`, ...top(out.get(n), "t"));
  return lines.join("\n");
}
function showTip(ev, n) {
  tip.textContent = tipText(n);
  tip.style.display = "block";
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = x + "px";
  tip.style.top = (ev.clientY + 14) + "px";
}
function hideTip() { tip.style.display = "none"; }

// ---- pruning and path highlighting
const slider = document.getElementById("threshold"), wslider = document.getElementById("minw");
let selected = null;
function visible(n, t) { return isFixed(n) || n.influence === null || n.influence <= t; }
function apply() {
  const t = Number(slider.value), mw = Number(wslider.value);
  document.getElementById("threshold-value").textContent = t.toFixed(2);
  document.getElementById("minw-value").textContent = mw.toFixed(2);
  let nv = 0, lv = 0;
  nodes.forEach((n) => { n.vis = visible(n, t); });
  links.forEach((l) => { l.vis = l.s.vis && l.t.vis && l.a >= mw; });
  const reach = selected && selected.vis ? paths(selected) : null;
  nodes.forEach((n) => {
    n.el.classList.toggle("hidden", !n.vis);
    n.el.classList.toggle("dim", !!reach && n.vis && !reach.has(n));
    n.el.classList.toggle("path", !!reach && reach.has(n) && n !== selected);
    n.el.classList.toggle("selected", n === selected && !!reach);
    if (n.vis) nv++;
  });
  links.forEach((l) => {
    l.el.classList.toggle("hidden", !l.vis);
    const onPath = (l.s.up && l.t.up) || (l.s.down && l.t.down);  // both ends on one side
    l.el.classList.toggle("dim", !!reach && l.vis && !onPath);
    l.el.classList.toggle("onpath", !!reach && l.vis && onPath);
    if (l.vis) lv++;
  });
  const stats = document.getElementById("stats");
  stats.textContent = `${nv} nodes, ${lv} links shown (of ${nodes.length}, ${links.length})`;
  stats.dataset.visibleNodes = nv;
  stats.dataset.visibleLinks = lv;
  stats.dataset.selected = reach ? selected.node_id : "";
  stats.dataset.highlighted = reach ? reach.size : 0;
}
function paths(start) {  // upstream and downstream of start, over visible links
  nodes.forEach((n) => { n.up = false; n.down = false; });
  const seen = new Set([start]);
  const walk = (dir) => {
    const stack = [start];
    while (stack.length) {
      const n = stack.pop();
      for (const l of (dir === "up" ? inc : out).get(n)) {
        const m = dir === "up" ? l.s : l.t;
        if (!l.vis || m[dir]) continue;
        m[dir] = true; seen.add(m); stack.push(m);
      }
    }
  };
  walk("up"); walk("down");
  start.up = start.down = true;
  return seen;
}
function select(n) { selected = selected === n ? null : n; apply(); }
svg.addEventListener("click", () => { selected = null; apply(); });
slider.addEventListener("input", apply);
wslider.addEventListener("input", apply);

// ---- state from the URL hash (#threshold=0.5&minw=0.1&select=ID&tip=ID), for links and tests
const params = new URLSearchParams(location.hash.slice(1));
if (params.has("threshold")) slider.value = params.get("threshold");
if (params.has("minw")) wslider.value = params.get("minw");
if (params.has("select")) selected = byId.get(params.get("select")) || null;
apply();
const tipNode = params.has("tip") ? byId.get(params.get("tip")) : null;
if (tipNode) {  // show one node's tooltip, as if hovered (for screenshots)
  const box = tipNode.el.getBoundingClientRect();
  showTip({clientX: box.right, clientY: box.bottom}, tipNode);
}
document.body.dataset.ready = "1";
})();
"""
