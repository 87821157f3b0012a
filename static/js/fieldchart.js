// A numeric field along one packet's journey (skb->len, shinfo->gso_segs, ... per function): where a
// super-packet is split shows as a step. x is placed exactly as in the swimlane above it (time or
// even spacing), so a point sits under its marker; hover and click act like the swimlane's.
import {s, clear} from "./dom.js";
import {SWIMLANE_GUTTER, SWIMLANE_PAD_R, hitX} from "./swimlane.js";

const HEIGHT = 150, TOP = 16, BOTTOM = 26;

// Field names the journey's hits carry, in first-seen order.
export function fieldNames(j) {
  const seen = [];
  for (const x of j.hits) for (const k of Object.keys(x.fields || {})) if (!seen.includes(k)) seen.push(k);
  return seen;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

// The fields with a number at some hit and nothing but numbers (or no value) at the others.
export function numericFields(j) {
  return fieldNames(j).filter((n) => j.hits.some((x) => x.fields && isNum(x.fields[n])) &&
    j.hits.every((x) => !x.fields || x.fields[n] === null || x.fields[n] === undefined || isNum(x.fields[n])));
}

// The field to chart first: the script's choice, else one that changes along the journey.
export function defaultChartField(j, numeric, preferred) {
  if (preferred && numeric.includes(preferred)) return preferred;
  const varies = numeric.find((n) => new Set(j.hits.map((x) => x.fields && x.fields[n]).filter(isNum)).size > 1);
  return varies || numeric[0] || null;
}

function fmt(v) {
  return Math.abs(v) >= 1e6 ? v.toExponential(2) : String(Math.round(v * 100) / 100);
}

export function renderFieldChart(host, j, name, opts = {}) {
  clear(host);
  const width = Math.max(640, host.clientWidth || 900);
  const pts = j.hits.map((x, i) => [i, x.fields ? x.fields[name] : null]).filter(([, v]) => isNum(v));
  const svg = s("svg", {class: "field-chart-svg", width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img", "aria-label": `${name} along packet ${j.id}`, "data-field": name});
  host.append(svg);
  if (!pts.length) return {highlight() {}};
  const vals = pts.map((p) => p[1]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (lo === hi) { lo = Math.min(0, lo); hi = hi === lo ? lo + 1 : hi; }
  const x = hitX(j, width, opts.mode || "time");
  const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (HEIGHT - TOP - BOTTOM);
  const right = width - SWIMLANE_PAD_R;

  for (const v of [lo, hi]) {
    svg.append(s("line", {class: "grid", x1: SWIMLANE_GUTTER, x2: right, y1: y(v), y2: y(v)}));
    svg.append(s("text", {class: "axis-label", x: SWIMLANE_GUTTER - 14, y: y(v) + 4, "text-anchor": "end", text: fmt(v)}));
  }
  svg.append(s("text", {class: "lane-label used", x: 8, y: HEIGHT - 8, text: name}));
  // a value holds until the next hit: draw steps, not slopes
  let d = "";
  pts.forEach(([i, v], k) => {
    const px = x(i), py = y(v);
    d += k === 0 ? `M${px},${py}` : `H${px}V${py}`;
  });
  svg.append(s("path", {class: "fc-line", d}));
  const sel = s("line", {class: "fc-sel", x1: 0, x2: 0, y1: TOP - 6, y2: HEIGHT - BOTTOM + 6, visibility: "hidden"});
  svg.append(sel);
  for (const [i, v] of pts) {
    const dot = s("circle", {class: "fc-pt", cx: x(i), cy: y(v), r: 3.5, "data-index": i, "data-value": v});
    if (opts.onHover) {
      dot.addEventListener("mouseenter", (ev) => opts.onHover(i, ev));
      dot.addEventListener("mouseleave", () => opts.onHover(-1));
    }
    if (opts.onSelect) dot.addEventListener("click", () => opts.onSelect(i));
    svg.append(dot);
  }
  return {
    highlight(i) {
      if (i < 0 || i >= j.hits.length) { sel.setAttribute("visibility", "hidden"); return; }
      sel.setAttribute("x1", x(i));
      sel.setAttribute("x2", x(i));
      sel.setAttribute("visibility", "visible");
    },
  };
}
