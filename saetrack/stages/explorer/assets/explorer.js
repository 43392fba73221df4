/* SAE-Track explorer: follow any feature of the chain through training (static files, no server, no network).
 *
 * Data files are scripts that call saetrack.receive(key, payload) (file:// forbids fetch of local files); a view
 * loads the ones it needs with a <script> tag. Views: #/ (index), #/feature/<i>, #/checkpoint/<step>, #/checkpoints.
 * Charts are drawn by Plotly.js (vendor/plotly-basic.min.js, loaded the first time a chart is needed).
 */
"use strict";

const saetrack = (() => {
  const store = new Map();
  const waiting = new Map();
  const receive = (key, payload) => {
    store.set(key, payload);
    (waiting.get(key) || []).forEach((resolve) => resolve(payload));
    waiting.delete(key);
  };
  const loadScript = (src) => new Promise((resolve, reject) => {
    const tag = document.createElement("script");
    tag.src = src;
    tag.charset = "utf-8";
    tag.onload = () => resolve();
    tag.onerror = () => reject(new Error(`could not load ${src} (is the explorer folder complete?)`));
    document.head.appendChild(tag);
  });
  const load = (key, src) => {
    if (store.has(key)) return Promise.resolve(store.get(key));
    return new Promise((resolve, reject) => {
      if (!waiting.has(key)) {
        waiting.set(key, []);
        loadScript(src).then(() => {
          if (!store.has(key)) reject(new Error(`${src} did not provide ${key}`));
        }, (err) => { waiting.delete(key); reject(err); });
      }
      waiting.get(key).push(resolve);
    });
  };
  let plotly = null;
  const plotlyReady = () => (plotly = plotly || loadScript("vendor/plotly-basic.min.js").then(() => window.Plotly));
  return { receive, load, store, plotlyReady };
})();
window.saetrack = saetrack;

const PAGE_SIZE = 100;
const featureFile = (f) => `data/features/${String(Math.floor(f / 1000)).padStart(3, "0")}/${f}.js`;
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "html") node.innerHTML = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return node;
};
// A number to `digits` significant digits, trailing zeros after a decimal point dropped (100 stays 100).
const fmt = (v, digits = 3) => {
  if (v === null || v === undefined) return "–";
  const [mantissa, exponent] = Number(v).toPrecision(digits).split("e");
  const trimmed = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
  return exponent === undefined ? trimmed : `${trimmed}e${exponent}`;
};
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(v < 0.01 ? 2 : 1)}%`);
const visible = (text) => text.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
const tokenSpan = (text) => el("span", { class: "tok", text: text === "" ? "∅" : visible(text) });
const LABEL = { t: "token", c: "concept", i: "inactive" };
const SHADE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
const PHASE_COLOURS = ["rgba(31, 95, 191, 0.07)", "rgba(245, 140, 20, 0.10)", "rgba(18, 161, 80, 0.08)"];

/* -- the run, the index and the token texts ---------------------------------------------------------------- */
const base = () => Promise.all([
  saetrack.load("run", "data/run.js"), saetrack.load("index", "data/index.js"), saetrack.load("vocab", "data/vocab.js"),
]);
const tokenText = (id) => (id < 0 ? "" : (saetrack.store.get("vocab")[String(id)] ?? `#${id}`));
const phaseIndex = (run, step) => {
  if (!run.phases) return null;
  if (step < run.phases.emergent_step) return 0;
  return step < run.phases.convergent_step ? 1 : 2;
};
// Each route() call gets a number; a view whose data arrives after a newer route started is not drawn.
let routeNumber = 0;
class Stale extends Error {}
const current = (number) => { if (number !== routeNumber) throw new Stale(); };
// Set when a view is drawn: what it shows and for which address (tests and screenshots wait on both).
const markReady = (what) => { document.body.dataset.hash = location.hash; document.body.dataset.ready = what; };

/* -- index ------------------------------------------------------------------------------------------------- */
const COLUMNS = [
  ["feature", "feature", "num"], ["pattern", "pattern"], ["sub_pattern", "sub-pattern"],
  ["first_label", "first: level"], ["first_token", "first: token"], ["final_label", "final: level"],
  ["final_token", "final: token"], ["formation_step", "forms at step", "num"],
  ["cosine_at_formation", "cos to final at formation", "num"], ["final_frequency", "final frequency", "num"],
  ["alive", "alive per checkpoint"], ["crosscoder_feature", "crosscoder match", "num"],
  ["crosscoder_cosine", "match cosine", "num"], ["crosscoder_emergence", "crosscoder emergence step", "num"],
];

const params = () => new URLSearchParams((location.hash.split("?")[1]) || "");
const setParams = (p) => { history.replaceState(null, "", `#/?${p.toString()}`); };

function filteredRows(index, p, search) {
  const n = index.feature.length;
  const q = (p.get("q") || "").toLowerCase();
  const text = (p.get("text") || "").toLowerCase();
  const pattern = p.get("pattern") || "";
  const level = p.get("level") || "";
  const liveOnly = p.get("live") === "1";
  const rows = [];
  for (let i = 0; i < n; i += 1) {
    if (pattern && index.pattern[i] !== pattern) continue;
    if (level && index.final_label[i] !== level) continue;
    if (liveOnly && !index.live[i]) continue;
    if (q && !(String(i) === q || index.first_token[i].toLowerCase().includes(q) || index.final_token[i].toLowerCase().includes(q))) continue;
    if (text && search && !search[i].toLowerCase().includes(text)) continue;
    rows.push(i);
  }
  const key = p.get("sort") || "feature";
  const dir = p.get("dir") === "desc" ? -1 : 1;
  const column = index[key];
  if (column) {
    rows.sort((a, b) => {
      const x = column[a]; const y = column[b];
      if (x === y) return a - b;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
  }
  return rows;
}

function aliveCell(bits) {
  return el("span", { class: "alive", title: "fired at each checkpoint's link (green) or not (grey)" },
    [...bits].map((b) => el("span", { class: b === "1" ? "on" : "off", text: "▮" })));
}

function indexCell(index, key, i, cls) {
  const v = index[key] ? index[key][i] : null;
  if (key === "feature") return el("td", { class: cls }, el("a", { class: "feature-link", href: `#/feature/${i}`, text: String(i) }));
  if (key === "first_token" || key === "final_token") return el("td", {}, tokenSpan(v));
  if (key === "first_label" || key === "final_label") return el("td", { class: `label-${v}`, text: v });
  if (key === "alive") return el("td", {}, aliveCell(v));
  if (key === "sub_pattern") return el("td", { text: String(v).replace(/^[a-z]+: /, "") });
  if (key === "crosscoder_feature" || key === "crosscoder_emergence" || key === "formation_step") return el("td", { class: cls, text: v ?? "–" });
  if (key === "final_frequency") return el("td", { class: cls, text: pct(v) });
  if (cls === "num") return el("td", { class: cls, text: fmt(v) });
  return el("td", { text: v });
}

async function showIndex(number) {
  const [run, index] = await base();
  const p = params();
  let search = null;
  if (p.get("text")) search = await saetrack.load("search", "data/search.js");
  current(number);
  const rows = filteredRows(index, p, search);
  const page = Math.max(0, Math.min(Number(p.get("page") || 0), Math.floor(Math.max(rows.length - 1, 0) / PAGE_SIZE)));
  const columns = COLUMNS.filter(([key]) => key in index);
  const patterns = [...new Set(index.pattern)].sort();
  const update = (changes) => {
    const next = params();
    for (const [k, v] of Object.entries(changes)) { if (v === "" || v === null) next.delete(k); else next.set(k, v); }
    if (!("page" in changes)) next.delete("page");
    setParams(next);
    route();
  };
  const select = (id, key, options, label) => el("label", {}, `${label} `, el("select", { id, onchange: (e) => update({ [key]: e.target.value }) },
    el("option", { value: "", text: "all" }), options.map((o) => el("option", { value: o, text: o, selected: p.get(key) === o }))));
  const controls = el("div", { class: "controls" },
    el("label", {}, "feature or token ", el("input", { id: "filter-text", type: "search", value: p.get("q") || "", placeholder: "e.g. 12 or ' the'",
      onchange: (e) => update({ q: e.target.value }) })),
    el("label", {}, "text in top contexts ", el("input", { id: "filter-contexts", type: "search", value: p.get("text") || "", placeholder: "e.g. Congress",
      onchange: (e) => update({ text: e.target.value }) })),
    select("filter-pattern", "pattern", patterns, "pattern"),
    select("filter-level", "level", ["token", "concept", "inactive"], "final level"),
    el("label", {}, el("input", { id: "filter-live", type: "checkbox", checked: p.get("live") === "1", onchange: (e) => update({ live: e.target.checked ? "1" : "" }) }), " live only"),
    el("span", { id: "match-count", class: "status", text: `${rows.length} of ${index.feature.length} features` }));
  const sortKey = p.get("sort") || "feature";
  const head = el("tr", {}, columns.map(([key, title, cls]) => el("th", {
    "data-key": key, class: cls, "aria-sort": key === sortKey ? (p.get("dir") === "desc" ? "descending" : "ascending") : null,
    onclick: () => update({ sort: key, dir: key === sortKey && p.get("dir") !== "desc" ? "desc" : "asc" }),
  }, title)));
  const body = el("tbody", {}, rows.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).map((i) => el("tr", { "data-feature": i },
    columns.map(([key, , cls]) => indexCell(index, key, i, cls)))));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  const pager = el("div", { class: "pager" },
    el("button", { id: "page-prev", disabled: page === 0, onclick: () => update({ page: String(page - 1) }) }, "‹ previous"),
    el("span", { text: `page ${page + 1} of ${pages}` }),
    el("button", { id: "page-next", disabled: page + 1 >= pages, onclick: () => update({ page: String(page + 1) }) }, "next ›"));
  const view = $("#view");
  view.replaceChildren(
    el("h1", { text: `${run.n_features} features across ${run.steps.length} checkpoints` }),
    el("p", { class: "status", text: `${run.n_live} live (App. A.1). Click a column to sort; the level is the token/concept label of Def. 4.1-4.2 and the token its dominant token among the top datapoints.` }),
    controls, pager, el("table", { id: "index-table" }, el("thead", {}, head), body));
  markReady(`index:${rows.length}`);
  setTimeout(() => saetrack.plotlyReady().catch(() => {}), 200);  // the charts' library, while the reader reads
}

/* -- a feature --------------------------------------------------------------------------------------------- */
const stepLabels = (run) => run.steps.map(String);
// On a category axis Plotly reads a number-like shape coordinate as a category's index, so shapes use indices.
const phaseShapes = (run) => {
  if (!run.phases) return [];
  const last = run.steps.length - 1;
  const bounds = [-0.5, run.steps.indexOf(run.phases.emergent_step) - 0.5, run.steps.indexOf(run.phases.convergent_step) - 0.5, last + 0.5];
  return [0, 1, 2].map((k) => ({ type: "rect", xref: "x", yref: "paper", x0: bounds[k], x1: bounds[k + 1], y0: 0, y1: 1,
    fillcolor: PHASE_COLOURS[k], line: { width: 0 }, layer: "below" }));
};
const vline = (steps, step, colour, dash = "dot") => {
  const x = steps.indexOf(step);
  return { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: colour, dash, width: 1.5 } };
};
const layout = (run, title, extra = {}) => ({
  title: { text: title, font: { size: 13 } }, margin: { l: 55, r: 55, t: 36, b: 45 }, height: 300,
  xaxis: { type: "category", title: { text: "training step (checkpoint)" }, tickangle: -45, nticks: 14 },
  legend: { orientation: "h", y: -0.32, font: { size: 11 } }, shapes: phaseShapes(run), ...extra,
});
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function driftChart(Plotly, run, f, node) {
  const x = stepLabels(run);
  const traces = [
    { x, y: f.to_final, name: "cosine to final link", mode: "lines+markers", line: { color: "#1f5fbf" } },
    { x: x.slice(1), y: f.adjacent, name: "cosine to previous link", mode: "lines+markers", line: { color: "#e0701b" } },
  ];
  const m = f.noise_to_final.length;
  if (m > 0) {
    const floorX = []; const floorY = [];
    for (let k = m; k >= 1; k -= 1) { if (x.length - 1 - k >= 0) { floorX.push(x[x.length - 1 - k]); floorY.push(f.noise_to_final[k - 1]); } }
    traces.push({ x: floorX, y: floorY, name: "noise floor: to final after m retrained links", mode: "lines+markers", line: { color: "#667085", dash: "dash" } });
    traces.push({ x: [x[1], x[x.length - 1]], y: [f.noise_to_final[0], f.noise_to_final[0]], name: "noise floor: one retrained link", mode: "lines", line: { color: "#98a2b3", dash: "dot" } });
  }
  const shapes = phaseShapes(run);
  if (f.formation_step !== null) shapes.push(vline(run.steps, f.formation_step, "#12a150"));
  return Plotly.newPlot(node, traces, layout(run, "Decoder direction (Sec. 6.1): cosine to the final and the previous link", { shapes, yaxis: { title: { text: "cosine" }, range: [-0.05, 1.05] } }), CONFIG);
}

function activationChart(Plotly, run, f, node) {
  const x = stepLabels(run);
  const traces = [
    { x, y: f.frequency, name: "firing frequency (training tokens)", mode: "lines+markers", line: { color: "#7a5af8" } },
    { x, y: f.max_activation, name: "max activation (analysis set)", mode: "lines+markers", yaxis: "y2", line: { color: "#e0701b" } },
  ];
  return Plotly.newPlot(node, traces, layout(run, "Activation frequency and maximum", {
    yaxis: { type: "log", title: { text: "frequency" }, exponentformat: "power" },
    yaxis2: { overlaying: "y", side: "right", title: { text: "max activation" }, rangemode: "tozero" },
  }), CONFIG);
}

function progressChart(Plotly, run, f, node) {
  if (!f.progress) { node.replaceChildren(el("p", { class: "note", text: "No progress measure: the feature is not live (App. A.1)." })); return Promise.resolve(); }
  const x = stepLabels(run);
  const within = f.progress.map((v, t) => (v === null || run.baseline[t] === null ? null : v + run.baseline[t]));
  const traces = [
    { x, y: f.progress, name: "progress measure M_i(t) (Eq. 14)", mode: "lines+markers", line: { color: "#12a150", width: 2.5 } },
    { x, y: within, name: "within-set similarity S_i(t)", mode: "lines", line: { color: "#1f5fbf", dash: "dot" } },
    { x, y: run.baseline, name: "random baseline B(t) (Eq. 16)", mode: "lines", line: { color: "#667085", dash: "dash" } },
  ];
  const shapes = phaseShapes(run);
  if (f.formation_step !== null) shapes.push(vline(run.steps, f.formation_step, "#12a150"));
  return Plotly.newPlot(node, traces, layout(run, "Progress measure (activation space) = S_i(t) − B(t)", { shapes, yaxis: { title: { text: "cosine" } } }), CONFIG);
}

function crosscoderChart(Plotly, run, f, node) {
  if (!run.crosscoder) { node.replaceChildren(el("p", { class: "note", text: "The crosscoder stage is off for this run." })); return Promise.resolve(); }
  if (!f.crosscoder) { node.replaceChildren(el("p", { class: "note", text: "No crosscoder feature is matched to this one (only live features are matched)." })); return Promise.resolve(); }
  const c = f.crosscoder;
  const x = run.crosscoder.steps.map(String);
  const shapes = [];
  if (c.emergence_step !== null) shapes.push(vline(run.crosscoder.steps, c.emergence_step, "#b54708"));
  const title = `Crosscoder feature ${c.feature} (matched, cos ${fmt(c.cosine)}): decoder norm per snapshot`;
  return Plotly.newPlot(node, [{ x, y: c.norms, name: "decoder norm", mode: "lines+markers", line: { color: "#b54708" } }],
    { ...layout(run, title), shapes, yaxis: { title: { text: "decoder norm" }, rangemode: "tozero" } }, CONFIG);
}

function contextSpan(run, f, ctx, top) {
  const [row, act, shading] = ctx;
  const ids = f.windows[String(row)];
  const centre = run.offsets.indexOf(0);
  const span = el("span", { class: "ctx" });
  ids.forEach((id, k) => {
    if (id < 0 || shading[k] === ".") return;
    const share = SHADE_ALPHABET.indexOf(shading[k]) / run.shades;
    const t = el("span", { class: `t${k === centre ? " peak" : ""}`, title: `activation ≈ ${fmt(share * top, 3)}`,
      text: visible(tokenText(id)), style: `background: rgba(var(--warm), ${(0.85 * share).toFixed(3)})` });
    span.append(t);
  });
  span.append(el("span", { class: "act", text: fmt(act) }));
  return span;
}

function contextsTable(run, f) {
  const rows = run.steps.map((step, t) => {
    const label = LABEL[f.labels[t]];
    const top = f.max_activation[t] || 0;
    const cells = f.contexts[t].map((ctx) => contextSpan(run, f, ctx, top));
    const phase = phaseIndex(run, step);
    return el("tr", { class: phase === null ? "" : `phase-${phase}`, "data-step": step },
      el("td", { class: "step" }, el("a", { href: `#/checkpoint/${step}`, text: step })),
      el("td", { class: `label-${label}`, text: label }),
      el("td", {}, f.dominant[t] >= 0 ? tokenSpan(tokenText(f.dominant[t])) : "–", el("div", { class: "status", text: f.share[t] === null ? "" : pct(f.share[t]) })),
      el("td", { class: "contexts-cell" }, cells.length ? cells : el("span", { class: "status", text: "inactive on the analysis set" })));
  });
  return el("table", { id: "contexts" }, el("thead", {}, el("tr", {}, ["step", "level", "dominant token", "top contexts (token shade: activation as a share of the checkpoint's maximum)"].map((h) => el("th", { text: h })))), el("tbody", {}, rows));
}

async function showFeature(i, number) {
  const [run, index] = await base();
  if (!(Number.isInteger(i) && i >= 0 && i < run.n_features)) throw new Error(`feature ${i} is out of range: this run's SAEs have ${run.n_features} features (0-${run.n_features - 1})`);
  const f = await saetrack.load(`feature/${i}`, featureFile(i));
  current(number);
  const view = $("#view");
  const nav = el("p", {}, i > 0 ? el("a", { href: `#/feature/${i - 1}`, text: `‹ feature ${i - 1}` }) : "", " ",
    i + 1 < run.n_features ? el("a", { href: `#/feature/${i + 1}`, text: `feature ${i + 1} ›` }) : "");
  const summary = el("div", { class: "summary" },
    el("div", {}, el("span", { text: "pattern " }), el("b", { text: f.sub_pattern || f.pattern })),
    el("div", {}, el("span", { text: "live " }), f.live ? "yes" : "no (excluded by App. A.1)"),
    el("div", {}, el("span", { text: "forms at step " }), f.formation_step ?? "never (strict rule)"),
    el("div", {}, el("span", { text: "first " }), LABEL[f.labels[0]], " ", tokenSpan(index.first_token[i])),
    el("div", {}, el("span", { text: "final " }), LABEL[f.labels[f.labels.length - 1]], " ", tokenSpan(index.final_token[i])),
    el("div", {}, el("span", { text: "crosscoder " }), f.crosscoder ? `feature ${f.crosscoder.feature} (cos ${fmt(f.crosscoder.cosine)}), emerges at ${f.crosscoder.emergence_step ?? "–"}` : "–"));
  const charts = ["chart-drift", "chart-activation", "chart-progress", "chart-crosscoder"].map((id) => el("div", { id, class: "chart" }));
  const nearest = el("ul", { id: "nearest", class: "links" }, f.nearest.map(([j, cos]) => el("li", {},
    el("a", { class: "feature-link", href: `#/feature/${j}`, text: `feature ${j}` }), ` cos ${fmt(cos)} `, tokenSpan(index.final_token[j]))));
  view.replaceChildren(
    el("h1", { text: `Feature ${i}` }), nav, summary,
    el("div", { class: "charts" }, charts),
    el("h2", { text: "Top contexts at every checkpoint (the paper's Fig. 2 row for this feature)" }),
    el("p", { class: "status" }, "Left border: training phase (blue warm-up, orange emergent, green convergent). Shade ", el("span", { class: "legend-swatch" }), " 0 → the checkpoint's top activation; the outlined token is the activating one, its activation at the end."),
    contextsTable(run, f),
    el("h2", { text: "Nearest features at the final checkpoint (decoder cosine)" }), nearest);
  const Plotly = await saetrack.plotlyReady();
  current(number);
  await Promise.all([driftChart(Plotly, run, f, charts[0]), activationChart(Plotly, run, f, charts[1]),
    progressChart(Plotly, run, f, charts[2]), crosscoderChart(Plotly, run, f, charts[3])]);
  current(number);
  const focus = params().get("step");
  const row = focus === null ? null : $(`#contexts tr[data-step="${Number(focus)}"]`);
  if (row) { row.classList.add("focus"); row.scrollIntoView({ block: "center" }); }
  markReady(`feature:${i}`);
}

/* -- checkpoints ------------------------------------------------------------------------------------------- */
async function showCheckpoints(number) {
  const [run] = await base();
  current(number);
  $("#view").replaceChildren(el("h1", { text: "Checkpoints" }), el("ul", { class: "links", id: "checkpoint-list" },
    run.steps.map((s) => el("li", {}, el("a", { href: `#/checkpoint/${s}`, text: `step ${s}` })))));
  markReady("checkpoints");
}

async function showCheckpoint(step, number) {
  const [run] = await base();
  const t = run.steps.indexOf(step);
  if (t < 0) throw new Error(`step ${step} is not a checkpoint of the chain; steps: ${run.steps.join(", ")}`);
  const c = await saetrack.load(`checkpoint/${step}`, `data/checkpoints/${step}.js`);
  current(number);
  const metrics = el("table", { id: "link-metrics" }, Object.entries(c.metrics).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { class: "num", text: fmt(v, 4) }))));
  const charts = ["chart-hist-final", "chart-hist-adjacent", "chart-formed"].map((id) => el("div", { id, class: "chart" }));
  const nav = el("p", {}, t > 0 ? el("a", { href: `#/checkpoint/${run.steps[t - 1]}`, text: `‹ step ${run.steps[t - 1]}` }) : "", " ",
    t + 1 < run.steps.length ? el("a", { href: `#/checkpoint/${run.steps[t + 1]}`, text: `step ${run.steps[t + 1]} ›` }) : "");
  $("#view").replaceChildren(
    el("h1", { text: `Checkpoint: step ${step}${c.phase ? ` · ${c.phase} phase` : ""}` }), nav,
    el("div", { class: "summary" },
      Object.entries(c.labels).map(([k, v]) => el("div", {}, el("span", { text: `${k}-level ` }), v)),
      el("div", {}, el("span", { text: "dead share " }), pct(c.dead_fraction)),
      el("div", {}, el("span", { text: "features forming here " }), c.formed.length)),
    el("h2", { text: "Link quality (held-out tokens)" }), metrics,
    el("div", { class: "charts" }, charts),
    el("h2", { text: "Features that form at this checkpoint" }),
    el("ul", { id: "formed", class: "links" }, c.formed.map(([j, pattern]) => el("li", {}, el("a", { class: "feature-link", href: `#/feature/${j}`, text: `feature ${j}` }), ` ${pattern}`))));
  const Plotly = await saetrack.plotlyReady();
  current(number);
  const bars = (h) => ({ x: h.edges.slice(0, -1).map((e, k) => (e + h.edges[k + 1]) / 2), y: h.counts, type: "bar", marker: { color: "#1f5fbf" } });
  const small = (title, xTitle) => ({ title: { text: title, font: { size: 13 } }, height: 280, margin: { l: 50, r: 20, t: 36, b: 45 }, xaxis: { title: { text: xTitle } }, yaxis: { title: { text: "live features" } }, bargap: 0.05 });
  const drawn = [Plotly.newPlot(charts[0], [bars(c.to_final)], small("Decoder cosine to the final link (Fig. 6a at this step)", "cosine"), CONFIG)];
  if (c.adjacent) drawn.push(Plotly.newPlot(charts[1], [bars(c.adjacent)], small("Decoder cosine to the previous link", "cosine"), CONFIG));
  else charts[1].replaceChildren(el("p", { class: "note", text: "The first link has no previous link." }));
  const patterns = Object.keys(c.formed_patterns);
  if (patterns.length) drawn.push(Plotly.newPlot(charts[2], [{ x: patterns, y: patterns.map((k) => c.formed_patterns[k]), type: "bar", marker: { color: "#12a150" } }], small("Patterns of the features forming here", "pattern"), CONFIG));
  else charts[2].replaceChildren(el("p", { class: "note", text: "No feature forms at this checkpoint." }));
  await Promise.all(drawn);
  current(number);
  markReady(`checkpoint:${step}`);
}

/* -- routing ----------------------------------------------------------------------------------------------- */
async function route() {
  routeNumber += 1;
  const number = routeNumber;
  const hash = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const parts = hash.split("/").filter(Boolean);
  document.body.dataset.ready = "";
  try {
    const run = (await base())[0];
    $("#run-title").textContent = `${run.preset} · ${run.n_features} features · ${run.steps.length} checkpoints`;
    if (parts[0] === "feature") await showFeature(Number(parts[1]), number);
    else if (parts[0] === "checkpoint") await showCheckpoint(Number(parts[1]), number);
    else if (parts[0] === "checkpoints") await showCheckpoints(number);
    else await showIndex(number);
  } catch (err) {
    if (err instanceof Stale) return;
    if (number !== routeNumber) return;
    $("#view").replaceChildren(el("p", { class: "error", text: String(err.message || err) }));
    markReady("error");
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", route);
