/* ipft-web marking rules panel: renders into <div id="marks-panel"> and talks to /api/marks.
 *
 * The page may set on the div: data-session="ID" data-mark="0xdeadbeef" data-mask="0xffffffff"
 * (the session's mark, used when the form's mark is empty; else GET /api/marks "default", else
 * 0xdeadbeef) and data-api="/api/marks".
 * Later changes: document.dispatchEvent(new CustomEvent("ipft:session", {detail: {id, mark, mask}})).
 * The preset button applies "ICMP to 127.0.0.2" and then asks the page to trace: it calls
 * window.ipftStartTrace({mark, mask, rule}) when defined and always dispatches "ipft-marks:trace"
 * (bubbling, detail {mark, mask, rule}) from the panel.
 * All text is set with textContent (never innerHTML); requests are same-origin with cookies.
 */
(function () {
  "use strict";

  const FIELDS = [
    // name, label, kind, options/placeholder, title
    ["direction", "Direction", "select", [["both", "both (RX + TX)"], ["rx", "RX: raw PREROUTING"], ["tx", "TX: raw OUTPUT"]]],
    ["family", "Family", "select", [["both", "IPv4 + IPv6"], ["ipv4", "IPv4"], ["ipv6", "IPv6"]]],
    ["proto", "Protocol", "select", [["any", "any"], ["tcp", "tcp"], ["udp", "udp"], ["icmp", "icmp"], ["icmpv6", "icmpv6"]]],
    ["src", "Source", "text", "10.0.0.0/8 or ::1", "address or prefix"],
    ["dst", "Destination", "text", "127.0.0.2", "address or prefix"],
    ["sport", "Src port", "text", "1024-65535", "port or range (tcp/udp)"],
    ["dport", "Dst port", "text", "443", "port or range (tcp/udp)"],
    ["iif", "In iface", "text", "eth0", "RX only"],
    ["oif", "Out iface", "text", "eth0", "TX only"],
    ["netns", "Netns", "netns", null, "marks are cleared when a packet enters another namespace: put the rule where the packet is"],
    ["rate", "Rate", "text", "100 or 10/minute", "mark at most N packets per second (or N/minute...)"],
    ["mark", "Mark", "text", "session mark", "empty: the session's mark"],
    ["mask", "Mask", "text", "0xffffffff", "empty: the session's mask"],
    ["tool", "Tool", "select", [["auto", "auto"], ["iptables", "iptables"], ["nft", "nft"]]],
  ];
  const PRESET = { direction: "tx", proto: "icmp", dst: "127.0.0.2" };
  const FALLBACK_MARK = "0xdeadbeef";
  const CSS = `
.marks-panel{font:13px/1.4 system-ui,sans-serif}
.marks-panel h3{margin:.2em 0 .5em;font-size:15px}
.marks-banner{background:#fff3cd;border:1px solid #e0c36c;padding:6px 8px;margin-bottom:8px}
.marks-error{color:#a40000;min-height:1.2em;margin:4px 0}
.marks-hint{color:#666;font-style:italic}
.marks-form{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:6px 10px}
.marks-form label{display:flex;flex-direction:column;font-size:12px;color:#444}
.marks-form input,.marks-form select{font:inherit;padding:2px 4px}
.marks-cmds{margin:6px 0}
.marks-cmd{display:flex;gap:6px;align-items:flex-start;margin:2px 0}
.marks-cmd code{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:2px 4px;flex:1;font:12px ui-monospace,monospace}
.marks-rule{border-top:1px solid #ddd;padding:6px 0}
.marks-buttons{display:flex;gap:8px;flex-wrap:wrap;margin:6px 0}
`;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  // A constructed style sheet: the dashboard's CSP (default-src 'self') blocks inline <style>.
  function addStyles() {
    if (window.__marksPanelCss) return;
    window.__marksPanelCss = true;
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    } catch (e) {
      document.head.appendChild(el("style", {}, CSS));   // older browsers (without a strict CSP)
    }
  }

  function csrfHeaders() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? { "X-CSRF-Token": meta.getAttribute("content") || "" } : {};
  }

  function copy(text, button) {
    const done = () => { const t = button.textContent; button.textContent = "copied"; setTimeout(() => { button.textContent = t; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text, done));
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    const ta = el("textarea", { readonly: "" });
    ta.style.position = "fixed";
    ta.style.left = "-9999px";
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selectable */ }
    ta.remove();
  }

  function commandList(commands) {
    const box = el("div", { class: "marks-cmds" });
    for (const text of commands || []) {
      const btn = el("button", { type: "button", class: "marks-copy", title: "copy this command" }, "copy");
      btn.addEventListener("click", () => copy(text, btn));
      box.appendChild(el("div", { class: "marks-cmd" }, el("code", {}, text), btn));
    }
    if ((commands || []).length > 1) {
      const all = el("button", { type: "button", class: "marks-copy-all" }, "copy all");
      all.addEventListener("click", () => copy(commands.join("\n"), all));
      box.appendChild(all);
    }
    return box;
  }

  function summary(spec) {
    const parts = [spec.direction, spec.family, spec.proto];
    for (const k of ["src", "dst", "sport", "dport", "iif", "oif"]) if (spec[k]) parts.push(`${k} ${spec[k]}`);
    if (spec.rate) parts.push(`≤ ${spec.rate}`);
    if (spec.netns) parts.push(`netns ${spec.netns}`);
    parts.push(`mark ${spec.mark}/${spec.mask}`);
    return parts.join(" · ");
  }

  class MarksPanel {
    constructor(root) {
      this.root = root;
      this.api = root.dataset.api || "/api/marks";
      this.session = { id: root.dataset.session || "", mark: root.dataset.mark || "", mask: root.dataset.mask || "" };
      this.inputs = {};
      this.previewTimer = null;
      this.previewSeq = 0;
      this.build();
      document.addEventListener("ipft:session", (ev) => this.setSession(ev.detail || {}));
      this.refresh();
    }

    async request(method, path, body) {
      const opts = { method, credentials: "same-origin", headers: Object.assign({ Accept: "application/json" }, csrfHeaders()) };
      if (body !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(body);
      }
      let resp;
      try {
        resp = await fetch(this.api + path, opts);
      } catch (e) {
        throw new Error("the server cannot be reached");
      }
      let data = null;
      try { data = await resp.json(); } catch (e) { /* not JSON */ }
      if (!resp.ok) throw new Error((data && data.error) || `HTTP ${resp.status}`);
      return data;
    }

    build() {
      addStyles();
      this.root.classList.add("marks-panel");
      this.root.replaceChildren();
      this.banner = el("div", { class: "marks-banner", hidden: "", role: "status" });
      this.error = el("div", { class: "marks-error", role: "alert", "aria-live": "polite" });
      this.preset = el("button", { type: "button", class: "marks-preset", title: "apply a TX rule marking ICMP to 127.0.0.2 with the session mark, then start tracing" },
        "Mark ICMP to 127.0.0.2 and trace");
      this.preset.addEventListener("click", () => this.presetAndTrace());

      const form = el("form", { class: "marks-form", autocomplete: "off" });
      for (const [name, label, kind, opt, title] of FIELDS) {
        let input;
        if (kind === "select") {
          input = el("select", { name });
          for (const [value, text] of opt) input.appendChild(el("option", { value }, text));
        } else if (kind === "netns") {
          input = el("select", { name });
          input.appendChild(el("option", { value: "" }, "(this namespace)"));
        } else {
          input = el("input", { name, type: "text", placeholder: opt, maxlength: "64", spellcheck: "false" });
        }
        if (title) input.title = title;
        input.addEventListener("input", () => this.schedulePreview());
        input.addEventListener("change", () => this.schedulePreview());
        this.inputs[name] = input;
        form.appendChild(el("label", {}, label, input));
      }
      form.addEventListener("submit", (ev) => { ev.preventDefault(); this.applyForm(); });
      this.previewBox = el("div", { class: "marks-preview" });
      this.applyBtn = el("button", { type: "button", class: "marks-apply" }, "Apply rule");
      this.applyBtn.addEventListener("click", (ev) => { ev.preventDefault(); this.applyForm(); });
      this.list = el("div", { class: "marks-list" });

      this.root.append(
        el("h3", {}, "Marking rules"),
        this.banner,
        el("div", { class: "marks-buttons" }, this.preset),
        form,
        el("div", { class: "marks-buttons" }, this.applyBtn),
        this.error,
        el("div", {}, el("strong", {}, "Commands"), this.previewBox),
        el("h3", {}, "Active rules"),
        this.list,
      );
    }

    body(fields) {
      const out = {};
      for (const [k, v] of Object.entries(fields)) if (v !== "" && v !== null && v !== undefined) out[k] = v;
      // mark: the form's, else the session's (with its mask), else ipftrace2's customary 0xdeadbeef
      if (!out.mark && this.session.mark) { out.mark = this.session.mark; if (this.session.mask) out.mask = out.mask || this.session.mask; }
      if (!out.mark) out.mark = FALLBACK_MARK;
      if (this.session.id) out.session = this.session.id;
      return out;
    }

    formBody() {
      const fields = {};
      for (const [name, input] of Object.entries(this.inputs)) fields[name] = input.value.trim();
      return this.body(fields);
    }

    setError(msg) { this.error.textContent = msg || ""; }

    setSession(detail) {
      if (detail.id !== undefined) this.session.id = String(detail.id || "");
      if (detail.mark !== undefined) this.session.mark = detail.mark === null ? "" : String(detail.mark);
      if (detail.mask !== undefined) this.session.mask = detail.mask === null ? "" : String(detail.mask);
      this.inputs.mark.placeholder = this.session.mark || FALLBACK_MARK;
      this.schedulePreview();
    }

    schedulePreview() {
      clearTimeout(this.previewTimer);
      this.previewTimer = setTimeout(() => this.preview(), 250);
    }

    async preview() {
      const seq = ++this.previewSeq;
      try {
        const data = await this.request("POST", "/preview", this.formBody());
        if (seq !== this.previewSeq) return;
        this.setError("");
        this.previewBox.replaceChildren(el("div", {}, `with ${data.tool} — copy to run by hand, or Apply:`), commandList(data.commands));
      } catch (e) {
        if (seq !== this.previewSeq) return;
        // what the rule still lacks, while it is being written: a hint, not an error (Apply says it in red)
        this.setError("");
        this.previewBox.replaceChildren(el("div", { class: "marks-hint" }, e.message));
      }
    }

    async applyForm() {
      this.applyBtn.disabled = true;
      try {
        const rule = await this.request("POST", "", this.formBody());
        this.setError("");
        this.previewBox.replaceChildren(el("div", {}, `applied ${rule.tag}:`), commandList(rule.commands));
        await this.refresh();
        return rule;
      } catch (e) {
        this.setError(e.message);
        return null;
      } finally {
        this.applyBtn.disabled = false;
      }
    }

    async presetAndTrace() {
      this.preset.disabled = true;
      try {
        // the preset keeps the namespace chosen in the form: the rule must live where the packet is
        const rule = await this.request("POST", "", this.body(Object.assign({ netns: this.inputs.netns.value }, PRESET)));
        this.setError("");
        this.previewBox.replaceChildren(el("div", {}, `applied ${rule.tag}:`), commandList(rule.commands));
        await this.refresh();
        const detail = { mark: rule.spec.mark, mask: rule.spec.mask, rule };
        if (typeof window.ipftStartTrace === "function") window.ipftStartTrace(detail);
        this.root.dispatchEvent(new CustomEvent("ipft-marks:trace", { bubbles: true, detail }));
      } catch (e) {
        this.setError(e.message);
      } finally {
        this.preset.disabled = false;
      }
    }

    async remove(id, button) {
      button.disabled = true;
      try {
        await this.request("DELETE", "/" + encodeURIComponent(id));
        this.setError("");
      } catch (e) {
        this.setError(e.message);
      }
      await this.refresh();
    }

    async removeLeftovers(button) {
      button.disabled = true;
      try {
        await this.request("DELETE", "/leftovers");
        this.setError("");
      } catch (e) {
        this.setError(e.message);
      }
      await this.refresh();
    }

    renderNetns(names) {
      const select = this.inputs.netns;
      const current = select.value;
      select.replaceChildren(el("option", { value: "" }, "(this namespace)"));
      for (const n of names || []) select.appendChild(el("option", { value: n }, n));
      if ((names || []).includes(current)) select.value = current;
    }

    renderRules(rules) {
      this.list.replaceChildren();
      if (!rules.length) {
        this.list.appendChild(el("div", { class: "marks-empty" }, "none"));
        return;
      }
      for (const rule of rules) {
        const btn = el("button", { type: "button", class: "marks-remove" }, "Remove");
        btn.addEventListener("click", () => this.remove(rule.id, btn));
        this.list.appendChild(el("div", { class: "marks-rule", "data-id": rule.id },
          el("div", {}, el("strong", {}, rule.tag), ` (${rule.tool}) `, summary(rule.spec), " ", btn),
          commandList(rule.commands)));
      }
    }

    renderLeftovers(items) {
      this.banner.replaceChildren();
      if (!items.length) { this.banner.hidden = true; return; }
      const ids = [...new Set(items.map((x) => x.id))];
      const btn = el("button", { type: "button", class: "marks-cleanup" }, "Remove them");
      btn.addEventListener("click", () => this.removeLeftovers(btn));
      this.banner.append(
        `${items.length} marking rule(s) left behind by an ipft that did not exit cleanly (${ids.map((i) => "ipft-web:" + i).join(", ")}). `,
        btn,
        commandList(items.map((x) => x.remove_command)));
      this.banner.hidden = false;
      const folded = this.root.closest("details");   // a warning nobody sees is no warning
      if (folded) folded.open = true;
    }

    async refresh() {
      try {
        const q = this.session.id ? "?session=" + encodeURIComponent(this.session.id) : "";
        const data = await this.request("GET", q);
        if (data.default && !this.session.mark) {
          this.session.mark = data.default.mark;
          this.session.mask = data.default.mask;
        }
        this.inputs.mark.placeholder = this.session.mark || FALLBACK_MARK;
        this.renderNetns(data.netns);
        this.renderRules(data.rules || []);
        if (data.tools && !data.tools.iptables && !data.tools.nft) this.setError("neither iptables nor nft is installed on the server");
      } catch (e) {
        this.setError(e.message);
      }
      try {
        const left = await this.request("GET", "/leftovers");
        this.renderLeftovers(left.leftovers || []);
      } catch (e) {
        this.renderLeftovers([]);
      }
    }
  }

  function start() {
    const root = document.getElementById("marks-panel");
    if (!root || root.__marksPanel) return;
    root.__marksPanel = new MarksPanel(root);
    window.ipftMarks = {
      refresh: () => root.__marksPanel.refresh(),
      setSession: (detail) => root.__marksPanel.setSession(detail || {}),
    };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
