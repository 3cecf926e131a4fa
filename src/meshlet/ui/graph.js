// The topology graph: services as nodes on a circle, callers' edges as arrows labelled
// with request rate, error rate and p99 (from GET /v1/signals, contract section B).

const NS = "http://www.w3.org/2000/svg";
const W = 900, H = 520, R = 34;

// Pure: where each service goes. Sorted, so the same mesh draws the same way.
export function layout(signals) {
  const names = new Set();
  for (const s of signals.services || []) names.add(s.service);
  for (const e of signals.edges || []) { names.add(e.source); names.add(e.destination); }
  const sorted = [...names].filter(Boolean).sort();
  const radius = Math.min(W, H) / 2 - R - 30;
  const at = new Map();
  sorted.forEach((name, i) => {
    const angle = (2 * Math.PI * i) / Math.max(sorted.length, 1) - Math.PI / 2;
    const x = sorted.length === 1 ? W / 2 : W / 2 + radius * Math.cos(angle);
    const y = sorted.length === 1 ? H / 2 : H / 2 + radius * Math.sin(angle);
    at.set(name, { x, y });
  });
  return at;
}

export function edgeLabel(edge) {
  const rps = edge.rps === null || edge.rps === undefined ? "–" : `${round(edge.rps)} rps`;
  const err = edge.error_rate === null || edge.error_rate === undefined ? "–"
    : `${round(edge.error_rate * 100)}% err`;
  const p99 = edge.p99 === null || edge.p99 === undefined ? "–"
    : `p99 ${round(edge.p99 * 1000)} ms`;
  return `${rps} · ${err} · ${p99}`;
}

function round(x) { return Number(Number(x).toPrecision(3)); }

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function render(signals) {
  const at = layout(signals);
  const root = svg("svg", { class: "topology", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "service topology" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#64748b" }));
  defs.append(marker);
  root.append(defs);
  for (const edge of signals.edges || []) {
    const a = at.get(edge.source), b = at.get(edge.destination);
    if (!a || !b || a === b) continue;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len;
    const g = svg("g", { class: edge.error_rate > 0 ? "edge errors" : "edge",
      "data-source": edge.source, "data-destination": edge.destination });
    g.append(svg("line", { x1: a.x + ux * R, y1: a.y + uy * R, x2: b.x - ux * R,
      y2: b.y - uy * R, "marker-end": "url(#arrow)" }));
    // The label sits beside the middle of the line, off it by a little.
    g.append(svg("text", { x: (a.x + b.x) / 2 - uy * 12, y: (a.y + b.y) / 2 + ux * 12 },
      edgeLabel(edge)));
    g.append(svg("title", {}, `${edge.source} → ${edge.destination}: ${edgeLabel(edge)}`));
    root.append(g);
  }
  const byName = new Map((signals.services || []).map((s) => [s.service, s]));
  for (const [name, p] of at) {
    const g = svg("g", { class: "node", "data-service": name });
    g.append(svg("circle", { cx: p.x, cy: p.y, r: R }));
    g.append(svg("text", { x: p.x, y: p.y + 4 }, name));
    const s = byName.get(name);
    if (s) {
      g.append(svg("text", { x: p.x, y: p.y + R + 16, class: "muted" },
        `${s.instances} inst · ${s.rps === null ? "–" : round(s.rps)} rps`));
    }
    root.append(g);
  }
  return root;
}
