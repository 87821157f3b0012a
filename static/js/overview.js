// Overview: every packet (as filtered in the list) as a lane of its own, hits as ticks coloured by
// layer, x = time since that packet's first hit on a shared scale. Virtualised like the list.
import {h, s, clear} from "./dom.js";
import {dur, ticks, tuple} from "./format.js";
import {dropIndex} from "./swimlane.js";

const ROW = 20, LABEL = 290, AXIS = 24, PAD_R = 20, MAX_CHARS = 41;

export class Overview {
  constructor(root, layers, onSelect) {
    this.root = root;
    this.layers = layers;
    this.onSelect = onSelect;
    this.rows = [];
    this.selected = null;
    this.scale = 1;
    this.axis = h("div", {class: "ov-axis"});
    this.spacer = h("div", {class: "ov-spacer"});
    this.canvas = h("div", {class: "ov-rows"});
    this.scroller = h("div", {class: "ov-scroll"}, this.spacer, this.canvas);
    clear(root).append(this.axis, this.scroller);
    this.scroller.addEventListener("scroll", () => this.schedule());
    new ResizeObserver(() => this.schedule()).observe(this.scroller);
  }

  set(journeys, selected) {
    this.rows = journeys;
    this.selected = selected;
    const durs = journeys.map((j) => j.duration_ns).sort((a, b) => a - b);
    this.scale = Math.max(1, durs.length ? durs[Math.min(durs.length - 1, Math.floor(durs.length * 0.99))] : 1);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    if (!this.root.offsetParent) return;   // hidden tab
    const width = Math.max(600, this.scroller.clientWidth);
    const plotW = width - LABEL - PAD_R;
    const x = (t) => LABEL + Math.min(t / this.scale, 1) * plotW;
    // axis
    const axis = s("svg", {width, height: AXIS, class: "ov-axis-svg"});
    for (const t of ticks(this.scale, Math.max(3, Math.floor(plotW / 110)))) {
      axis.append(s("line", {class: "grid", x1: x(t), x2: x(t), y1: AXIS - 6, y2: AXIS}));
      axis.append(s("text", {class: "axis-label", x: x(t), y: AXIS - 9, "text-anchor": "middle",
        text: t === 0 ? "0" : dur(t, t < 1e4 ? 1 : 0)}));
    }
    axis.append(s("text", {class: "axis-label", x: 8, y: AXIS - 9, text: `${this.rows.length} packets · time since each packet's first hit`}));
    clear(this.axis).append(axis);

    const total = this.rows.length;
    this.spacer.style.height = `${total * ROW}px`;
    const top = this.scroller.scrollTop, height = this.scroller.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW) - 3);
    const last = Math.min(total, Math.ceil((top + height) / ROW) + 3);
    const svg = s("svg", {width, height: Math.max(0, (last - first) * ROW), class: "ov-svg"});
    svg.style.transform = `translateY(${first * ROW}px)`;
    for (let k = first; k < last; k++) {
      const j = this.rows[k];
      const y = (k - first) * ROW;
      const g = s("g", {class: "ov-row" + (j === this.selected ? " selected" : "") + (j.drop_reason ? " dropped" : ""),
        "data-id": j.id});
      g.append(s("rect", {class: "ov-bg", x: 0, y, width, height: ROW}));
      const label = `#${j.id} ${tuple(j.tuple, true)}`;
      g.append(s("text", {class: "ov-label", x: 8, y: y + 14, text: label.length > MAX_CHARS ? label.slice(0, MAX_CHARS - 1) + "…" : label},
        s("title", {text: `#${j.id} ${tuple(j.tuple)}`})));
      const y0 = y + 4, y1 = y + ROW - 4;
      g.append(s("line", {class: "ov-span", x1: x(0), x2: x(j.duration_ns), y1: (y0 + y1) / 2, y2: (y0 + y1) / 2}));
      const drop = dropIndex(j);
      j.hits.forEach((hit, i) => {
        const hx = x(hit.t_ns);
        if (i === drop) {
          g.append(s("path", {class: "ov-drop", d: `M${hx - 4},${y0}L${hx + 4},${y1}M${hx + 4},${y0}L${hx - 4},${y1}`}));
        } else {
          g.append(s("rect", {x: hx - 1, y: y0, width: 2, height: y1 - y0, fill: this.layers.color(this.layers.of(hit.func))}));
        }
      });
      if (j.duration_ns > this.scale) g.append(s("text", {class: "ov-more", x: width - PAD_R + 4, y: y + 14, text: "»"}));
      g.addEventListener("click", () => this.onSelect && this.onSelect(j));
      svg.append(g);
    }
    clear(this.canvas).append(svg);
  }
}
