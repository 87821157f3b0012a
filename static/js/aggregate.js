// Aggregate: distinct paths with how many packets took each, most-hit functions, drops.
import {h, clear} from "./dom.js";
import {int} from "./format.js";

export function aggregate(journeys) {
  const paths = new Map(), funcs = new Map(), drops = new Map();
  for (const j of journeys) {
    const names = j.hits.map((x) => x.func);
    const key = names.join("\u0001");
    let p = paths.get(key);
    if (!p) { p = {names, count: 0, drops: 0, example: j}; paths.set(key, p); }
    p.count++;
    if (j.drop_reason) {
      p.drops++;
      const dk = `${j.drop_reason}\u0001${j.drop_func || ""}`;
      drops.set(dk, (drops.get(dk) || 0) + 1);
    }
    for (const f of names) funcs.set(f, (funcs.get(f) || 0) + 1);
  }
  return {
    total: journeys.length,
    paths: [...paths.values()].sort((a, b) => b.count - a.count),
    funcs: [...funcs.entries()].sort((a, b) => b[1] - a[1]),
    drops: [...drops.entries()].map(([k, n]) => { const [r, f] = k.split("\u0001"); return {reason: r, func: f, count: n}; })
      .sort((a, b) => b.count - a.count),
  };
}

export function renderAggregate(root, journeys, layers, onPath) {
  const a = aggregate(journeys);
  clear(root);
  if (!a.total) { root.append(h("p", {class: "muted", text: "No packets yet."})); return; }

  const pathRows = a.paths.slice(0, 100).map((p, i) => {
    const strip = h("div", {class: "strip"});
    for (const f of p.names) {
      const cell = h("span", {class: "cell", title: f});
      cell.style.background = layers.color(layers.of(f));
      strip.append(cell);
    }
    const detail = h("div", {class: "path-detail", hidden: true},
      ...p.names.map((f) => {
        const chip = h("span", {class: "chip", text: f});
        chip.style.borderColor = layers.color(layers.of(f));
        return chip;
      }));
    const share = h("div", {class: "share"}, h("span", {class: "share-bar"}));
    share.firstChild.style.width = `${(100 * p.count / a.total).toFixed(1)}%`;
    const row = h("div", {class: "path-row" + (p.drops ? " dropped" : ""), dataset: {rank: i + 1}},
      h("div", {class: "path-head"},
        h("span", {class: "p-count", text: int(p.count)}),
        share,
        h("span", {class: "p-pct", text: `${(100 * p.count / a.total).toFixed(1)}%`}),
        h("span", {class: "p-hits", text: `${p.names.length} hits`}),
        strip,
        h("span", {class: "p-ends", text: `${p.names[0]} → ${p.names[p.names.length - 1]}`}),
        p.drops ? h("span", {class: "drop-tag", text: `${p.drops} dropped`}) : null,
        h("button", {class: "link", type: "button", text: "packets", title: "show these packets in the list",
          onclick: (ev) => { ev.stopPropagation(); onPath && onPath(p); }})),
      detail);
    row.querySelector(".path-head").addEventListener("click", () => { detail.hidden = !detail.hidden; });
    return row;
  });

  const maxF = a.funcs.length ? a.funcs[0][1] : 1;
  const funcRows = a.funcs.slice(0, 40).map(([f, n]) => {
    const bar = h("span", {class: "fbar"});
    bar.style.width = `${(100 * n / maxF).toFixed(1)}%`;
    bar.style.background = layers.color(layers.of(f));
    return h("div", {class: "frow"}, h("span", {class: "f-name", text: f, title: layers.label(layers.of(f))}),
      h("span", {class: "f-track"}, bar), h("span", {class: "f-n", text: int(n)}));
  });

  const dropRows = a.drops.map((d) => h("div", {class: "drow"},
    h("span", {class: "drop-tag", text: d.reason}), h("span", {class: "muted", text: d.func ? `in ${d.func}` : ""}),
    h("span", {class: "f-n", text: int(d.count)})));

  root.append(
    h("section", {class: "agg-paths"},
      h("h3", {text: `Distinct paths: ${int(a.paths.length)} among ${int(a.total)} packets`}),
      ...pathRows),
    h("div", {class: "agg-side"},
      h("section", {class: "agg-funcs"}, h("h3", {text: "Most-hit functions"}), ...funcRows),
      h("section", {class: "agg-drops"}, h("h3", {text: `Drops: ${int(a.drops.reduce((x, d) => x + d.count, 0))}`}),
        ...(dropRows.length ? dropRows : [h("p", {class: "muted", text: "none"})]))));
}
