// Element builders: every text goes in through textContent/setAttribute, never innerHTML.
const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.setAttribute("class", v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(sel, root = document) { return root.querySelector(sel); }

// Empty `el`; returns an object whose append() skips null/false children (Element.append would print "null").
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return {append: (...kids) => { el.append(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false)); return el; }};
}
