// Function -> layer, with the rules the server serves from data/layers.json (/api/layers).
export class Layers {
  constructor(data) {
    this.list = data.layers;
    this.byId = new Map(data.layers.map((l, i) => [l.id, Object.assign({index: i}, l)]));
    this.def = data.default;
    this.rules = data.rules.map((r) => [new RegExp(r.match), r.layer]);
    this.cache = new Map();
  }
  of(func) {
    let id = this.cache.get(func);
    if (id === undefined) {
      id = this.def;
      for (const [re, layer] of this.rules) { if (re.test(func)) { id = layer; break; } }
      this.cache.set(func, id);
    }
    return id;
  }
  color(id) { return (this.byId.get(id) || {}).color || "#888"; }
  label(id) { return (this.byId.get(id) || {}).label || id; }
  index(id) { const l = this.byId.get(id); return l ? l.index : this.list.length; }
}
