// The dashboard: start/stop a session, watch the tracer, list packets, show one packet's swimlane,
// an overview of all packets and an aggregate of their paths. Data: the JSON API + Socket.IO.
import {api, ApiError} from "./api.js";
import {h, $, clear} from "./dom.js";
import {dur, hex, int, tuple, when} from "./format.js";
import {Layers} from "./layers.js";
import {PacketList} from "./packets.js";
import {renderSwimlane, dropIndex} from "./swimlane.js";
import {defaultChartField, fieldNames, numericFields, renderFieldChart} from "./fieldchart.js";
import {Overview} from "./overview.js";
import {renderAggregate} from "./aggregate.js";

const ACTIVE = new Set(["starting", "attaching", "tracing", "stopping"]);
const st = {
  layers: null, status: null, sessions: [], viewed: null, viewedRow: null, seen: new Set(),
  selected: null, hit: -1, mode: "time", tab: "swimlane", lane: null, dirty: false, loading: 0, pendingRules: [],
  scripts: [], chartField: null, chart: null, fieldCols: true,
};
let list, overview;

// ---------------------------------------------------------------------------------------------
async function boot() {
  try {
    st.layers = new Layers(await api.layers());
  } catch (e) {
    return fatal(e);
  }
  list = new PacketList($("#plist"), selectJourney);
  $("#plist").addEventListener("counts", (ev) => {
    const {shown, total} = ev.detail;
    $("#plist-count").textContent = shown === total ? int(total) : `${int(shown)} of ${int(total)}`;
  });
  overview = new Overview($("#overview"), st.layers, (j) => { list.select(j); showTab("swimlane"); });
  loadScripts();
  wireForm();
  wireTabs();
  connect();
  await refreshStatus();
  await refreshSessions();
  const active = st.status && st.status.active;
  const first = active ? active.id : (st.sessions[0] && st.sessions[0].id);
  if (!st.sessions.length) $("#marks-details").open = true;     // first use: show how to mark packets
  window.ipftStartTrace = startFromMarks;
  if (first) await viewSession(first);
  else renderHeader();
  window.addEventListener("resize", () => { if (st.selected) renderDetail(); });
  setInterval(tick, 1000);
}

// Installed field scripts for the start form's picker (never uploaded: they run as root).
async function loadScripts() {
  try {
    st.scripts = (await api.scripts()).scripts || [];
  } catch (e) {
    st.scripts = [];
  }
  const sel = $("#f-script");
  for (const sc of st.scripts) {
    sel.append(h("option", {value: sc.name, title: `${sc.description}\n${sc.fields.join(" ")}`, text: sc.name}));
  }
  sel.addEventListener("change", () => {
    const sc = st.scripts.find((x) => x.name === sel.value);
    sel.title = sc ? `${sc.description}: ${sc.fields.join(", ")}` : "";
  });
}

// The marks panel (static/marks.js) asks to trace the mark its rule sets.
async function startFromMarks(detail) {
  const active = st.status && st.status.active;
  if (active && ACTIVE.has(active.state)) return;
  // the rule just made belongs to the session this starts: removed when it ends
  st.pendingRules = detail && detail.rule && detail.rule.id ? [detail.rule.id] : [];
  if (detail && detail.mark !== undefined && detail.mark !== null && detail.mark !== "") $("#f-mark").value = String(detail.mark);
  if (detail && detail.mask !== undefined && detail.mask !== null && detail.mask !== "") $("#f-mask").value = String(detail.mask);
  $("#start-form").requestSubmit();
}

// Tell the marks panel which session (and mark) is current.
function announceSession() {
  const row = st.viewedRow;
  const panel = $("#marks-panel");
  const live = !!(row && st.status && st.status.active && st.status.active.id === row.id);
  const mark = live ? hex(row.config.mark) : $("#f-mark").value.trim();
  const mask = live ? hex(row.config.mask) : ($("#f-mask").value.trim() || "0xffffffff");
  const id = live ? String(row.id) : "";
  const key = `${id}|${mark}|${mask}`;
  if (panel.dataset.announced === key) return;
  panel.dataset.announced = key;
  panel.dataset.session = id;
  panel.dataset.mark = mark;
  panel.dataset.mask = mask;
  document.dispatchEvent(new CustomEvent("ipft:session", {detail: {id: id || null, mark, mask}}));
}

function fatal(e) {
  showError(e.status === 401 ? "Not signed in: open the URL ipft-web printed at start." : e.message);
}

// -- live connection --------------------------------------------------------------------------
function connect() {
  const socket = io({transports: ["websocket", "polling"]});
  let connectedBefore = false;
  socket.on("connect", async () => {
    $("#conn").className = "conn on";
    $("#conn").title = "live";
    if (connectedBefore) {                 // back after a drop-out: catch up on what was missed
      if (window.ipftMarks) window.ipftMarks.refresh();   // a restarted server may have found leftovers
      await refreshSessions();
      if (st.viewed) viewSession(st.viewed, st.selected && st.selected.id);
    }
    connectedBefore = true;
  });
  socket.on("disconnect", () => { $("#conn").className = "conn off"; $("#conn").title = "disconnected"; });
  socket.on("connect_error", (err) => {
    $("#conn").className = "conn off";
    $("#conn").title = err && err.message ? err.message : "cannot connect";
  });
  socket.on("status", (s) => updateStatus(s));
  const utf8 = new TextDecoder();
  socket.on("journeys", (buf) => {       // binary: UTF-8 JSON {session, journeys}
    const msg = JSON.parse(utf8.decode(buf));
    if (msg.session === st.viewed) addJourneys(msg.journeys);
  });
  socket.on("ended", async (msg) => {
    if (window.ipftMarks) window.ipftMarks.refresh();   // its rules went with it
    await refreshSessions();
    if (msg.session && msg.session.id === st.viewed) { st.viewedRow = msg.session; renderHeader(); }
  });
}

async function refreshStatus() {
  try { updateStatus(await api.status()); } catch (e) { fatal(e); }
}

function updateStatus(s) {
  const prevActive = st.status && st.status.active && st.status.active.id;
  st.status = Object.assign({}, st.status || {}, s);
  const active = st.status.active;
  if (s.backends) fillBackends(s.backends);
  if (active && active.id !== prevActive) {
    refreshSessions();
    if (st.viewed !== active.id) viewSession(active.id);   // another browser started one: follow it
  }
  if (active && active.id === st.viewed) st.viewedRow = active;
  renderHeader();
}

function fillBackends(list) {
  const sel = $("#f-backend");
  const want = list.join(",");
  if (sel.dataset.list === want) return;
  const cur = sel.value;
  clear(sel).append(...list.map((b) => h("option", {value: b, text: b})));
  if (list.includes(cur)) sel.value = cur;
  sel.dataset.list = want;
}

async function refreshSessions() {
  try {
    st.sessions = (await api.sessions()).sessions;
  } catch (e) { return fatal(e); }
  const sel = $("#session-select");
  clear(sel).append(...st.sessions.map((x) => h("option", {value: x.id, text: sessionLabel(x)})));
  if (st.viewed) sel.value = String(st.viewed);
}

function sessionLabel(x) {
  return `#${x.id} ${when(x.created)} · ${hex(x.config.mark)} · ${x.state} · ${int(x.journeys)}`;
}

// -- one session ------------------------------------------------------------------------------
async function viewSession(id, reselect = null) {
  st.viewed = id;
  st.seen = new Set();
  st.selected = null;
  list.reset();
  list.setPath(null);
  renderDetail();
  $("#session-select").value = String(id);
  $("#export-jsonl").href = `/api/sessions/${id}/export.jsonl`;
  $("#export-trace").href = `/api/sessions/${id}/export.trace.json`;
  const token = ++st.loading;
  try {
    st.viewedRow = await api.session(id);
    renderHeader();
    let after = 0;
    for (;;) {
      const page = await api.journeys(id, after);
      if (token !== st.loading) return;          // another session was opened meanwhile
      addJourneys(page.journeys);
      if (page.next_after === null) break;
      after = page.next_after;
    }
    const again = reselect === null ? null : list.items.find((j) => j.id === reselect);
    if (again) list.select(again);
  } catch (e) { showError(e.message); }
}

function addJourneys(journeys) {
  const fresh = journeys.filter((j) => !st.seen.has(j.id));
  if (!fresh.length) return;
  fresh.forEach((j) => st.seen.add(j.id));
  list.add(fresh);
  if (!st.selected) list.select(list.visible()[0]);
  st.dirty = true;
}

function tick() {
  if (st.dirty && st.tab !== "swimlane") { st.dirty = false; renderTab(); }
}

// -- header / tracer state ----------------------------------------------------------------------
function renderHeader() {
  const row = st.viewedRow;
  const s = st.status || {};
  const active = s.active;
  const live = active && row && active.id === row.id;
  const state = live ? active.state : (row ? row.state : "idle");
  const pill = $("#state-pill");
  pill.className = `pill ${state}`;
  pill.textContent = state;
  $("#session-title").textContent = row
    ? `#${row.id} · mark ${hex(row.config.mark)}/${hex(row.config.mask)}` + (row.config.regex ? ` · /${row.config.regex}/` : "")
      + ` · ${row.config.backend}` + (row.created ? ` · ${when(row.created)}` : "")
    : "no session";
  const stats = (live ? s.tracer : row && row.stats) || {};
  const prog = live ? s.progress : null;
  $("#st-attached").textContent = stats.attached === undefined ? "–" : int(stats.attached)
    + (stats.failed ? ` (+${int(stats.failed)} refused)` : "");
  $("#st-events").textContent = live && s.rates ? int(Math.round(s.rates.events_per_s)) : "–";
  $("#st-lost").textContent = stats.lost === undefined ? "–" : int(stats.lost);
  $("#st-lost").classList.toggle("bad", !!stats.lost);
  $("#st-journeys").textContent = row ? int(row.journeys) : "–";
  $("#st-drops").textContent = row ? int(row.drops) : "–";
  $("#st-drops").classList.toggle("bad", !!(row && row.drops));

  if (row) {
    const opt = $(`#session-select option[value="${row.id}"]`);
    const label = sessionLabel(Object.assign({}, row, live ? {state, journeys: active.journeys} : {}));
    if (opt && opt.textContent !== label) opt.textContent = label;
  }
  const running = !!(active && ACTIVE.has(active.state));
  $("#btn-start").disabled = running;
  $("#btn-stop").disabled = !running || active.state === "stopping";

  const pr = $("#progress");
  if (live && prog && (state === "attaching" || state === "starting")) {
    pr.hidden = false;
    const pct = prog.total ? (100 * prog.done / prog.total) : 8;
    $("#progress-bar").style.width = `${pct.toFixed(1)}%`;
    $("#progress-text").textContent = prog.total ? `${prog.stage} ${int(prog.done)}/${int(prog.total)}` : `${prog.stage}…`;
  } else pr.hidden = true;

  const cap = $("#cap-banner");
  if (row && row.capped) {
    cap.hidden = false;
    cap.textContent = `Journey cap reached: ${int(row.journeys)} kept, ${int(row.over_cap)} more seen but not kept (ipft-web --max-journeys).`;
  } else cap.hidden = true;
  announceSession();
  const err = row && row.error;
  if (err) showError(`session #${row.id}: ${err}`); else if (!st.formError) $("#error").hidden = true;
}

function showError(text) {
  const el = $("#error");
  el.textContent = text;
  el.hidden = !text;
}

// -- start form -------------------------------------------------------------------------------
function wireForm() {
  $("#start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    st.formError = false;
    showError("");
    const body = {mark: $("#f-mark").value.trim(), mask: $("#f-mask").value.trim() || "0xffffffff",
      regex: $("#f-regex").value, backend: $("#f-backend").value,
      fields: $("#f-fields").value.split(",").map((f) => f.trim()).filter(Boolean)};
    if ($("#f-script").value) body.script = $("#f-script").value;
    if (st.pendingRules && st.pendingRules.length) body.mark_rules = st.pendingRules;
    st.pendingRules = [];
    $("#btn-start").disabled = true;
    try {
      const res = await api.start(body);
      await refreshSessions();
      if (st.viewed !== res.id) await viewSession(res.id);
    } catch (e) {
      st.formError = true;
      showError(e.message);
      $("#btn-start").disabled = false;
    }
  });
  $("#btn-stop").addEventListener("click", async () => {
    const active = st.status && st.status.active;
    if (!active) return;
    $("#btn-stop").disabled = true;
    try { await api.stop(active.id); } catch (e) { showError(e.message); }
  });
  let timer = null;
  $("#f-regex").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(preview, 250); });
  $("#f-filter").addEventListener("input", applyFilter);
  $("#f-mark").addEventListener("input", announceSession);
  $("#f-mask").addEventListener("input", announceSession);
  $("#f-drops").addEventListener("change", applyFilter);
  $("#f-fieldcols").addEventListener("change", (ev) => { st.fieldCols = ev.target.checked; if (st.selected) renderHits($("#hits"), st.selected); if (st.hit >= 0) pickHit(st.hit, false); });
  $("#session-select").addEventListener("change", (ev) => viewSession(Number(ev.target.value)));
  document.querySelectorAll(".seg-btn").forEach((b) => b.addEventListener("click", () => {
    st.mode = b.dataset.mode;
    document.querySelectorAll(".seg-btn").forEach((x) => x.classList.toggle("active", x === b));
    renderDetail();
  }));
  preview();
}

function applyFilter() {
  list.setFilter($("#f-filter").value, $("#f-drops").checked);
  st.dirty = true;
  tick();
}

let previewSeq = 0;
async function preview() {
  const seq = ++previewSeq;
  const box = $("#fn-preview");
  const regex = $("#f-regex").value;
  if (!st.status || st.status.functions === "loading") {       // the server is reading the kernel's types
    clear(box).append(h("span", {class: "muted", text: "loading the kernel's function list…"}));
    if (st.status) refreshStatus();
    setTimeout(() => { if (seq === previewSeq) preview(); }, 1000);
    return;
  }
  try {
    const r = await api.functions(regex, 8);
    if (seq !== previewSeq) return;
    const head = h("div", {class: "fn-count"}, h("b", {text: int(r.count)}),
      ` of ${int(r.total)} match`, r.tracepoints ? h("span", {class: "muted", text: ` · ${int(r.tracepoints)} tracepoints`}) : null);
    const names = h("div", {class: "fn-names"}, ...r.matches.map((m) => h("span", {class: "fn", title: m.module ? `module ${m.module}` : "vmlinux"},
      m.name, h("i", {text: m.kind === "tracepoint" ? " tp" : ` skb@${m.pos}`}))),
      r.count > r.shown ? h("span", {class: "muted", text: ` … ${int(r.count - r.shown)} more`}) : null);
    clear(box).append(head, names);
    box.classList.remove("bad");
  } catch (e) {
    if (seq !== previewSeq) return;
    clear(box).append(h("span", {text: e.message}));
    box.classList.toggle("bad", e.status === 400);
    if (e.status === 503) setTimeout(() => { if (seq === previewSeq) preview(); }, 1500);
  }
}

// -- tabs ---------------------------------------------------------------------------------------
function wireTabs() {
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
}

function showTab(name) {
  st.tab = name;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  for (const t of ["swimlane", "overview", "aggregate"]) $(`#tab-${t}`).hidden = t !== name;
  renderTab();
}

function renderTab() {
  if (st.tab === "overview") overview.set(list.visible(), st.selected);
  else if (st.tab === "aggregate") renderAggregate($("#aggregate"), list.visible(), st.layers, (p) => {
    list.setPath(p.names);
    showTab("swimlane");
    list.select(p.example);
  });
  else renderDetail();
}

// -- one packet -------------------------------------------------------------------------------
function selectJourney(j) {
  st.selected = j;
  st.hit = -1;
  if (st.tab === "swimlane") renderDetail();
  else if (st.tab === "overview") overview.set(list.visible(), j);
}

function renderDetail() {
  const j = st.selected;
  const head = $("#pkt-head"), host = $("#swimlane"), table = $("#hits"), legend = $("#legend");
  if (!j) {
    clear(head).append(h("span", {class: "muted", text: "Select a packet in the list."}));
    clear(host); clear(table); clear(legend);
    host.hidden = true;                      // no empty frame
    renderChart(null);
    $("#fieldcols-toggle").hidden = true;
    return;
  }
  host.hidden = false;
  clear(head).append(
    h("span", {class: "pkt-id", text: `#${j.id}`}),
    h("span", {class: "pkt-tuple", text: tuple(j.tuple)}),
    h("span", {class: "kv"}, h("i", {text: "hits"}), String(j.hits.length)),
    h("span", {class: "kv"}, h("i", {text: "duration"}), dur(j.duration_ns)),
    h("span", {class: "kv"}, h("i", {text: "dev"}), `${j.dev || "-"}${j.ifindex ? ` (${j.ifindex})` : ""}`),
    h("span", {class: "kv"}, h("i", {text: "netns"}), String(j.netns || "-")),
    h("span", {class: "kv"}, h("i", {text: "mark"}), hex(j.mark)),
    h("span", {class: "kv"}, h("i", {text: "skb"}), j.skb),
    h("span", {class: "kv"}, h("i", {text: "end"}), j.end),
    j.drop_reason ? h("span", {class: "drop-tag big", text: `DROPPED ${j.drop_reason}${j.drop_func ? " in " + j.drop_func : ""}`}) : null,
    j.truncated_hits ? h("span", {class: "warn-tag", text: `${int(j.truncated_hits)} more hits not kept`}) : null);
  const used = [...new Set(j.hits.map((x) => st.layers.of(x.func)))].sort((a, b) => st.layers.index(a) - st.layers.index(b));
  clear(legend).append(...used.map((id) => {
    const sw = h("span", {class: "sw"});
    sw.style.background = st.layers.color(id);
    return h("span", {class: "lg"}, sw, st.layers.label(id));
  }));
  st.lane = renderSwimlane(host, j, st.layers, {mode: st.mode, onHover: (i, ev) => hover(j, i, ev), onSelect: (i) => pickHit(i, true)});
  renderChart(j);
  renderHits(table, j);
  if (st.hit >= 0) pickHit(st.hit, false);
}

// The chart of a numeric field along the journey, under the swimlane (sessions with fields only).
function renderChart(j) {
  const box = $("#field-chart"), sel = $("#f-chart");
  const numeric = j ? numericFields(j) : [];
  st.chart = null;
  if (!numeric.length) { box.hidden = true; clear($("#field-chart-plot")); return; }
  box.hidden = false;
  if (!numeric.includes(st.chartField)) {
    const script = st.viewedRow && st.viewedRow.config && st.viewedRow.config.script;
    const sc = st.scripts.find((x) => x.name === script);
    st.chartField = defaultChartField(j, numeric, sc && sc.chart);
  }
  clear(sel).append(...numeric.map((n) => h("option", {value: n, text: n})));
  sel.value = st.chartField;
  sel.onchange = () => { st.chartField = sel.value; renderChart(st.selected); if (st.hit >= 0) pickHit(st.hit, false); };
  st.chart = renderFieldChart($("#field-chart-plot"), j, st.chartField,
    {mode: st.mode, onHover: (i, ev) => hover(j, i, ev), onSelect: (i) => pickHit(i, true)});
}

function renderHits(table, j) {
  const drop = dropIndex(j);
  const names = fieldNames(j);
  const toggle = $("#fieldcols-toggle");
  toggle.hidden = !names.length;
  const cols = st.fieldCols ? names : [];
  const rows = j.hits.map((x, i) => {
    const layer = st.layers.of(x.func);
    const dot = h("span", {class: "dot"});
    dot.style.background = st.layers.color(layer);
    const tr = h("tr", {class: i === drop ? "drop" : "", dataset: {index: i}},
      h("td", {class: "n", text: i + 1}),
      h("td", {class: "n", text: (x.t_ns / 1e3).toFixed(3)}),
      h("td", {class: "n", text: i ? "+" + ((x.t_ns - j.hits[i - 1].t_ns) / 1e3).toFixed(3) : ""}),
      h("td", {class: "layer"}, dot, st.layers.label(layer)),
      h("td", {class: "fn", text: x.func}),
      h("td", {class: "n", text: x.cpu}),
      h("td", {class: "n", text: x.len}),
      h("td", {text: x.dev ? `${x.dev}${x.ifindex ? ":" + x.ifindex : ""}` : "-"}),
      h("td", {class: "n", text: x.netns || "-"}),
      h("td", {class: "muted", text: x.kind || ""}),
      ...cols.map((n) => {
        const v = x.fields ? x.fields[n] : undefined;
        return h("td", {class: typeof v === "number" ? "n fv" : "fv", text: v === null || v === undefined ? "-" : String(v)});
      }));
    tr.addEventListener("click", () => pickHit(i, false));
    tr.addEventListener("mouseenter", () => st.lane && st.lane.highlight(i));
    return tr;
  });
  clear(table).append(
    h("thead", {}, h("tr", {}, ...["#", "t µs", "Δt µs", "layer", "function", "cpu", "len", "dev", "netns", "kind"]
      .map((c) => h("th", {text: c})), ...cols.map((n) => h("th", {class: "fh", text: n})))),
    h("tbody", {}, ...rows));
}

function pickHit(i, scroll) {
  st.hit = i;
  if (st.lane) st.lane.highlight(i);
  if (st.chart) st.chart.highlight(i);
  document.querySelectorAll("#hits tbody tr").forEach((tr, k) => tr.classList.toggle("selected", k === i));
  if (scroll) {
    const tr = document.querySelectorAll("#hits tbody tr")[i];
    if (tr) tr.scrollIntoView({block: "nearest"});
  }
}

function hover(j, i, ev) {
  const tip = $("#tooltip");
  if (i < 0 || !ev) { tip.hidden = true; return; }
  const x = j.hits[i];
  const layer = st.layers.of(x.func);
  const dt = i ? x.t_ns - j.hits[i - 1].t_ns : 0;
  const drop = i === dropIndex(j) && j.drop_reason;
  clear(tip).append(
    h("div", {class: "tt-func", text: x.func}),
    h("div", {class: "tt-layer", text: `${st.layers.label(layer)} · ${x.kind || ""} · hit ${i + 1}/${j.hits.length}`}),
    h("table", {}, h("tbody", {},
      ttRow("t", `+${dur(x.t_ns)}`), ttRow("Δt", i ? `+${dur(dt)}` : "–"), ttRow("cpu", x.cpu), ttRow("len", x.len),
      ttRow("dev", x.dev ? `${x.dev} (ifindex ${x.ifindex})` : "-"), ttRow("netns", x.netns || "-"),
      ...Object.entries(x.fields || {}).map(([k, v]) => ttRow(k, v === null ? "null" : String(v))),
      drop ? ttRow("drop", `${j.drop_reason}${j.drop_func ? " in " + j.drop_func : ""}`, "bad") : null)));
  tip.hidden = false;
  const pad = 14;
  const r = tip.getBoundingClientRect();
  const px = ev.clientX !== undefined ? ev.clientX : ev.target.getBoundingClientRect().right;
  const py = ev.clientY !== undefined ? ev.clientY : ev.target.getBoundingClientRect().bottom;
  tip.style.left = `${Math.min(px + pad, window.innerWidth - r.width - 8)}px`;
  tip.style.top = `${Math.min(py + pad, window.innerHeight - r.height - 8)}px`;
}

function ttRow(k, v, cls) {
  return h("tr", {class: cls || ""}, h("th", {text: k}), h("td", {text: v}));
}

boot();
