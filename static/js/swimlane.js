// The swimlane of one packet: lanes = kernel layers, x = time since its first hit (or even spacing),
// one marker per hit joined in order, the drop in red with its reason.
import {s, clear} from "./dom.js";
import {dur, ticks} from "./format.js";

const GUTTER = 132, PAD_R = 28, AXIS = 30, LANE = 34, CHAR = 6.1;
// Where the drop shows: the skb:kfree_skb tracepoint (it carries the reason), else the free function.
const DROP_FUNCS = ["skb:kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop", "kfree_skb"];

export function dropIndex(j) {
  if (!j.drop_reason) return -1;
  for (const name of DROP_FUNCS) {
    const i = j.hits.findIndex((h) => h.func === name);
    if (i >= 0) return i;
  }
  return j.hits.length - 1;
}

export const SWIMLANE_GUTTER = GUTTER, SWIMLANE_PAD_R = PAD_R;

// x of hit i in an SVG `width` wide: its time since the first hit, or its rank ("even").
export function hitX(j, width, mode) {
  const plotW = width - GUTTER - PAD_R;
  const total = Math.max(j.duration_ns || 0, 1);
  const n = j.hits.length;
  return mode === "even"
    ? (i) => GUTTER + (n > 1 ? (i / (n - 1)) * plotW : plotW / 2)
    : (i) => GUTTER + (j.hits[i].t_ns / total) * plotW;
}

export function renderSwimlane(host, j, layers, opts = {}) {
  clear(host);
  const mode = opts.mode || "time";
  const width = Math.max(640, host.clientWidth || 900);
  const used = new Set(j.hits.map((hit) => layers.of(hit.func)));
  const lanes = layers.list.filter((l) => l.id !== layers.def || used.has(l.id));
  const laneY = new Map(lanes.map((l, i) => [l.id, AXIS + i * LANE + LANE / 2]));
  const lanesEnd = AXIS + lanes.length * LANE;
  const drop = dropIndex(j);
  const height = lanesEnd + (drop >= 0 ? 32 : 10);
  const plotW = width - GUTTER - PAD_R;
  const total = Math.max(j.duration_ns || 0, 1);
  const n = j.hits.length;
  const x = hitX(j, width, mode);

  const svg = s("svg", {class: "swimlane", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `swimlane of packet ${j.id}`});

  // lanes
  lanes.forEach((l, i) => {
    const y = AXIS + i * LANE;
    const on = used.has(l.id);
    svg.append(s("rect", {class: "lane-bg" + (i % 2 ? " odd" : "") + (on ? " used" : ""), x: 0, y,
      width, height: LANE, "data-layer": l.id}));
    svg.append(s("rect", {x: 8, y: y + LANE / 2 - 5, width: 10, height: 10, rx: 2, fill: l.color,
      opacity: on ? 1 : 0.25}));
    svg.append(s("text", {class: "lane-label" + (on ? " used" : ""), x: 24, y: y + LANE / 2 + 4, text: l.label}));
  });
  svg.append(s("line", {class: "gutter-line", x1: GUTTER - 10, x2: GUTTER - 10, y1: AXIS, y2: lanesEnd}));

  // axis
  if (mode === "time") {
    for (const t of ticks(total, Math.max(3, Math.floor(plotW / 110)))) {
      const tx = GUTTER + (t / total) * plotW;
      svg.append(s("line", {class: "grid", x1: tx, x2: tx, y1: AXIS - 4, y2: lanesEnd}));
      svg.append(s("text", {class: "axis-label", x: tx, y: AXIS - 10, "text-anchor": "middle",
        text: t === 0 ? "0" : dur(t, t < 1e4 ? 1 : 0)}));
    }
  } else {
    const step = Math.max(1, Math.ceil(n / Math.max(3, Math.floor(plotW / 60))));
    for (let i = 0; i < n; i += step) {
      svg.append(s("line", {class: "grid", x1: x(i), x2: x(i), y1: AXIS - 4, y2: lanesEnd}));
      svg.append(s("text", {class: "axis-label", x: x(i), y: AXIS - 10, "text-anchor": "middle", text: `#${i + 1}`}));
    }
  }

  // netns changes: a dashed boundary where the packet moves to another network namespace
  for (let i = 1; i < n; i++) {
    const a = j.hits[i - 1].netns, b = j.hits[i].netns;
    if (a && b && a !== b) {
      const bx = (x(i - 1) + x(i)) / 2;
      svg.append(s("line", {class: "netns-line", x1: bx, x2: bx, y1: AXIS - 4, y2: lanesEnd}));
      svg.append(s("text", {class: "netns-label", x: bx + 3, y: AXIS + 9, text: `netns ${b}`}));
    }
  }

  // path in order
  const pts = j.hits.map((hit, i) => `${x(i).toFixed(1)},${laneY.get(layers.of(hit.func)).toFixed(1)}`);
  svg.append(s("polyline", {class: "path", points: pts.join(" ")}));

  // labels: two slots per lane (above/below the markers), first come first placed, measured in
  // the live SVG so that no two overlap
  host.append(svg);
  const slotEnd = new Map();
  const labels = s("g", {class: "labels"});
  svg.append(labels);
  j.hits.forEach((hit, i) => {
    if (i === drop) return;
    const layer = layers.of(hit.func);
    const cx = x(i), cy = laneY.get(layer);
    const el = s("text", {class: "hit-label", x: cx - 3, y: 0, text: hit.func});
    labels.append(el);
    const w = el.getComputedTextLength ? el.getComputedTextLength() || hit.func.length * CHAR : hit.func.length * CHAR;
    const anchorEnd = cx - 3 + w > width - 4;
    const left = anchorEnd ? cx + 3 - w : cx - 3;
    for (const slot of ["above", "below"]) {
      const key = layer + slot;
      if ((slotEnd.get(key) ?? -1e9) + 5 < left) {
        slotEnd.set(key, left + w);
        el.setAttribute("x", anchorEnd ? cx + 3 : left);
        el.setAttribute("y", slot === "above" ? cy - 8 : cy + 15);
        if (anchorEnd) el.setAttribute("text-anchor", "end");
        return;
      }
    }
    el.remove();
  });

  // markers
  const markers = [];
  j.hits.forEach((hit, i) => {
    const layer = layers.of(hit.func);
    const cx = x(i), cy = laneY.get(layer);
    const isDrop = i === drop;
    const g = s("g", {class: "hit" + (isDrop ? " drop" : ""), "data-index": i, "data-func": hit.func, "data-layer": layer,
      transform: `translate(${cx.toFixed(1)},${cy.toFixed(1)})`, tabindex: 0});
    if (isDrop) {
      g.append(s("circle", {class: "drop-mark", r: 7}));
      g.append(s("path", {class: "drop-x", d: "M-3.5,-3.5L3.5,3.5M3.5,-3.5L-3.5,3.5"}));
    } else {
      g.append(s("circle", {class: "marker", r: 4.5, fill: layers.color(layer)}));
    }
    g.append(s("circle", {class: "hit-area", r: isDrop ? 10 : 7}));
    const show = (ev) => opts.onHover && opts.onHover(i, ev);
    g.addEventListener("mouseenter", show);
    g.addEventListener("mousemove", show);
    g.addEventListener("focus", (ev) => opts.onHover && opts.onHover(i, ev));
    g.addEventListener("mouseleave", () => opts.onHover && opts.onHover(-1));
    g.addEventListener("blur", () => opts.onHover && opts.onHover(-1));
    g.addEventListener("click", () => opts.onSelect && opts.onSelect(i));
    markers.push(g);
  });
  // the drop last, so it is on top of its neighbours
  markers.forEach((g, i) => { if (i !== drop) svg.append(g); });
  if (drop >= 0) svg.append(markers[drop]);

  if (drop >= 0) {
    // the reason in a footer row under the lanes, tied to the red marker by a leader line
    const hit = j.hits[drop];
    const cx = x(drop), cy = laneY.get(layers.of(hit.func));
    const text = `DROPPED ${j.drop_reason}` + (j.drop_func ? ` in ${j.drop_func}` : "");
    const w = text.length * 6.6 + 14;
    const by = lanesEnd + 6;
    const bx = Math.min(Math.max(cx - w + 20, GUTTER - 6), width - w - 6);
    svg.append(s("g", {class: "drop-label", "data-reason": j.drop_reason},
      s("line", {class: "drop-leader", x1: cx, x2: cx, y1: cy + 8, y2: by}),
      s("rect", {x: bx, y: by, width: w, height: 18, rx: 3}),
      s("text", {x: bx + 7, y: by + 13, text})));
  }
  return {
    highlight(i) {
      markers.forEach((m, k) => m.classList.toggle("selected", k === i));
    },
  };
}
