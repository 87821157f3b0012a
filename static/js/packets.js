// The live packet list: newest first, filtered by text and "dropped only", virtualised (only the
// rows in view exist in the DOM), so 10,000+ journeys scroll smoothly.
import {h, clear} from "./dom.js";
import {durShort, tuple} from "./format.js";

const ROW = 22;
const END_SHORT = {freed: "", timeout: "idle", exit: "exit", evicted: "evict", reused: "reuse"};

export class PacketList {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.items = [];          // journeys, arrival order
    this.keys = [];           // lowercase search text per journey
    this.view = [];           // indexes into items, newest first
    this.query = "";
    this.dropsOnly = false;
    this.path = null;         // only journeys with exactly this function sequence (from Aggregate)
    this.selected = null;     // journey object
    this.base = null;         // start_ns of the first journey (times shown relative to it)
    this.spacer = h("div", {class: "plist-spacer"});
    this.rows = h("div", {class: "plist-rows"});
    this.scroller = h("div", {class: "plist-scroll", tabindex: 0}, this.spacer, this.rows);
    clear(root).append(this.scroller);
    this.scroller.addEventListener("scroll", () => this.schedule(false));
    this.scroller.addEventListener("keydown", (ev) => this.key(ev));
    new ResizeObserver(() => this.schedule(false)).observe(this.scroller);
    this.pending = false;
    this.version = 0;         // bumped on any change of items, filter or selection
    this.drawn = "";
  }

  reset() {
    this.items = []; this.keys = []; this.view = []; this.selected = null; this.base = null;
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  add(journeys) {
    for (const j of journeys) {
      this.items.push(j);
      this.keys.push(searchKey(j));
      if (this.base === null || j.start_ns < this.base) this.base = j.start_ns;
    }
    // keep the rows under the eye still while new ones arrive on top
    const keep = this.scroller.scrollTop > 0;
    const before = this.view.length;
    this.refilter();
    if (keep) this.scroller.scrollTop += (this.view.length - before) * ROW;
    this.schedule();
  }

  setFilter(query, dropsOnly) {
    this.query = query.trim().toLowerCase();
    this.dropsOnly = dropsOnly;
    this.refilter();
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  setPath(names) {
    this.path = names ? names.join("\u0001") : null;
    this.refilter();
    this.scroller.scrollTop = 0;
    this.schedule();
  }

  refilter() {
    const terms = this.query.split(/\s+/).filter(Boolean);
    const out = [];
    for (let i = this.items.length - 1; i >= 0; i--) {
      if (this.dropsOnly && !this.items[i].drop_reason) continue;
      if (this.path !== null && this.items[i].hits.map((x) => x.func).join("\u0001") !== this.path) continue;
      const key = this.keys[i];
      if (terms.every((t) => key.includes(t))) out.push(i);
    }
    this.view = out;
  }

  schedule(changed = true) {
    if (changed) this.version++;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const total = this.view.length;
    this.spacer.style.height = `${total * ROW}px`;
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(total, Math.ceil((top + height) / ROW) + 5);
    const key = `${first}:${last}:${this.version}`;
    if (key === this.drawn) return;        // same rows as on screen: keep the DOM as it is
    this.drawn = key;
    const frag = document.createDocumentFragment();
    for (let k = first; k < last; k++) frag.append(this.row(this.items[this.view[k]], k));
    clear(this.rows).append(frag);
    this.root.dispatchEvent(new CustomEvent("counts", {detail: {shown: total, total: this.items.length}}));
  }

  row(j, k) {
    const rel = this.base === null ? 0 : j.start_ns - this.base;
    const cls = "prow" + (j.drop_reason ? " dropped" : "") + (j === this.selected ? " selected" : "");
    const el = h("div", {class: cls, dataset: {id: j.id}, role: "row"},
      h("span", {class: "c-id", text: `#${j.id}`}),
      h("span", {class: "c-time", text: "+" + (rel / 1e9).toFixed(3) + "s"}),
      h("span", {class: "c-tuple", text: tuple(j.tuple, true), title: tuple(j.tuple)}),
      h("span", {class: "c-dev", text: j.dev || "-"}),
      h("span", {class: "c-hits", text: `${j.hits.length}h`}),
      h("span", {class: "c-dur", text: durShort(j.duration_ns)}),
      j.drop_reason ? h("span", {class: "c-end drop-tag", text: "DROP", title: `${j.drop_reason} in ${j.drop_func || "?"}`})
        : h("span", {class: "c-end", text: END_SHORT[j.end] ?? j.end, title: j.end}));
    el.style.transform = `translateY(${k * ROW}px)`;
    el.addEventListener("click", () => this.select(j));
    return el;
  }

  select(j) {
    this.selected = j;
    this.schedule();
    if (this.onSelect) this.onSelect(j);
  }

  key(ev) {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    ev.preventDefault();
    let pos = this.view.findIndex((i) => this.items[i] === this.selected);
    pos = pos < 0 ? 0 : pos + (ev.key === "ArrowDown" ? 1 : -1);
    if (pos < 0 || pos >= this.view.length) return;
    this.select(this.items[this.view[pos]]);
    const y = pos * ROW;
    if (y < this.scroller.scrollTop) this.scroller.scrollTop = y;
    else if (y + ROW > this.scroller.scrollTop + this.scroller.clientHeight) this.scroller.scrollTop = y + ROW - this.scroller.clientHeight;
  }

  visible() { return this.view.map((i) => this.items[i]); }
}

function searchKey(j) {
  const funcs = [...new Set(j.hits.map((x) => x.func))].join(" ");
  return `#${j.id} ${tuple(j.tuple)} ${j.dev || ""} ${j.end} ${j.drop_reason || ""} ${j.drop_func || ""} ${funcs}`.toLowerCase();
}
