// The mesh dashboard page: polls /api/cluster and /api/runs/<run>, keeps what it polled as history (busy
// fraction per actor, tokens/s, pool occupancy) and draws plain SVG charts. No libraries: it works offline.
"use strict";

const HISTORY = 150; // samples kept per series (5 minutes at the default 2 s refresh)
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d"];
const SVG_NS = "http://www.w3.org/2000/svg";
// Which metrics share a chart (by meaning and unit) comes from the API: services/dashboard/charts.py.
const state = { refreshS: 2, run: new URLSearchParams(location.search).get("run") || "", busy: new Map(), tps: [], pool: [] };

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1000) return value.toFixed(0);
  return Number(value.toPrecision(digits)).toString();
}

function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.splice(0, series.length - HISTORY);
}

function sparkline(svg, values, max) {
  svg.replaceChildren();
  const shown = values.filter((v) => v !== null && v !== undefined);
  if (shown.length < 1) return;
  const top = max ?? Math.max(...shown, 1e-9);
  const n = Math.max(values.length - 1, 1);
  const points = values
    .map((v, i) => (v === null || v === undefined ? null : `${(i / n) * 100},${40 - (v / top) * 38}`))
    .filter(Boolean);
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.append(el("svg:polyline", { points: points.join(" ") }));
}

function lineChart(title, series, group) {
  const W = 320, H = 160, L = 44, R = 8, T = 8, B = 22;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, "data-group": group });
  svg.append(el("svg:line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(el("svg:line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    svg.append(el("svg:text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" }, fmt(y)));
  }
  svg.append(el("svg:text", { x: L, y: H - 6 }, `step ${fmt(x0)}`));
  svg.append(el("svg:text", { x: W - R, y: H - 6, "text-anchor": "end" }, fmt(x1)));
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    svg.append(el("svg:polyline", { points: s.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), stroke: color }));
    for (const [x, y] of s.points) {
      const dot = el("svg:circle", { class: "pt", cx: sx(x), cy: sy(y), r: 2.5, fill: color, "data-series": s.name });
      dot.append(el("svg:title", {}, `${s.name} @ step ${x}: ${fmt(y, 5)}`));
      svg.append(dot);
    }
    legend.append(el("span", {}, el("i", { style: `background:${color}` }), s.name));
  });
  return el("div", { class: "chart", "data-group": group }, el("h3", {}, title), svg, legend);
}

function seriesOf(points, names) {
  return names.map((name) => ({
    name, points: points.filter((p) => name in p.metrics && p.step !== null).map((p) => [p.step, p.metrics[name]]),
  })).filter((s) => s.points.length);
}

// One chart per group of the API's `charts` ({title, unit, metrics}); at most 6 lines per chart stay readable.
function chartsOf(points, groups) {
  const charts = [];
  for (const group of groups) {
    const series = seriesOf(points, group.metrics);
    const title = group.unit ? `${group.title} (${group.unit})` : group.title;
    for (let i = 0; i < series.length; i += 6) {
      const part = series.slice(i, i + 6);
      charts.push(lineChart(series.length > 6 ? `${title} ${i / 6 + 1}` : title, part, group.title));
    }
  }
  return charts;
}

function renderCurves(steps, groups) {
  const box = document.getElementById("curves");
  document.getElementById("step-count").textContent = steps.length ? `${steps.length} steps, last ${steps.at(-1).step}` : "";
  if (!steps.length) { box.replaceChildren(el("p", { class: "small" }, "no step metrics yet")); return; }
  box.replaceChildren(...chartsOf(steps, groups));
}

function renderGates(gates, groups) {
  const box = document.getElementById("gates");
  const rows = document.querySelector("#gate-table tbody");
  if (!gates.length) {
    box.replaceChildren(el("p", { class: "small" }, "no validation gate yet"));
    rows.replaceChildren();
    return;
  }
  box.replaceChildren(...chartsOf(gates, groups));
  rows.replaceChildren(
    el("tr", {}, el("th", {}, "step"), el("th", {}, "trial"), el("th", {}, "status"), el("th", {}, "metric")),
    ...gates.map((g) => el("tr", { class: g.status === "keep" ? "best" : "" },
      el("td", {}, g.step ?? "–"), el("td", {}, g.trial_id), el("td", {}, g.status),
      el("td", {}, `${g.metric_name} = ${fmt(g.metric, 4)}`))),
  );
}

function renderRun(run) {
  renderCurves(run.steps, run.charts);
  renderGates(run.gates, run.gate_charts);
  document.getElementById("card").textContent = run.card || "no trials recorded for this run yet";
  const error = document.getElementById("run-error");
  error.hidden = !run.error;
  error.textContent = run.error || "";
}

function renderActors(actors) {
  const now = Date.now();
  const live = new Set();
  const rows = actors.map((a) => {
    live.add(a.actor_id);
    if (!state.busy.has(a.actor_id)) state.busy.set(a.actor_id, []);
    const history = state.busy.get(a.actor_id);
    push(history, a.busy);
    const spark = el("svg:svg", { class: "busy", viewBox: "0 0 100 40", preserveAspectRatio: "none" });
    sparkline(spark, history, 1);
    const asked = `${fmt(a.required.CPU ?? 0)} / ${fmt(a.required.GPU ?? 0)}`;
    const gauges = Object.entries(a.gauges).map(([k, v]) => `${k.replace(/^fieldkit_/, "")} ${fmt(v)}`).join(", ");
    const busyText = a.busy === null ? "–" : `${Math.round(a.busy * 100)}% (${a.busy_source})`;
    return el("tr", { class: a.state === "DEAD" ? "dead" : "", "data-class": a.class_name, "data-state": a.state },
      el("td", { title: a.actor_id }, a.name ? `${a.class_name} · ${a.name}` : a.class_name),
      el("td", { class: `state-${a.state}`, title: a.death || "" }, a.state, a.restarts ? ` (${a.restarts} restarts)` : ""),
      el("td", { title: a.node_id || "" }, a.node_ip || "–"),
      el("td", { class: "num" }, asked),
      el("td", { class: "num" }, fmt(a.cpu_percent)),
      el("td", { class: "num" }, fmtBytes(a.rss_bytes)),
      el("td", { class: "num" }, a.gpu_memory_mb ? `${fmt(a.gpu_memory_mb)} MiB` : "–"),
      el("td", {}, spark, el("span", { class: "small" }, ` ${busyText}`)),
      el("td", { class: "small" }, gauges));
  });
  for (const id of state.busy.keys()) if (!live.has(id)) state.busy.delete(id);
  document.querySelector("#actors tbody").replaceChildren(...rows);
  const alive = actors.filter((a) => a.state === "ALIVE").length;
  document.getElementById("actor-count").textContent = `${alive} alive of ${actors.length} shown · ${new Date(now).toLocaleTimeString()}`;
}

function renderNodes(nodes) {
  document.getElementById("nodes").replaceChildren(...nodes.map((n) => el("tr", {},
    el("td", { title: n.node_id || "" }, n.hostname || n.ip),
    el("td", { class: "num" }, `CPU ${fmt(n.cpu_percent)}%`),
    el("td", { class: "num" }, `mem ${fmtBytes(n.mem_used)} / ${fmtBytes(n.mem_total)}`),
    el("td", { class: "small" }, n.gpus.map((g) => `${g.name} ${fmt(g.utilization)}% ${fmt(g.memory_used_mb)}/${fmt(g.memory_total_mb)} MiB`).join("; ") || "no GPU"),
    el("td", { class: "small" }, n.resources.split("\n").filter((line) => !line.includes("object_store")).join(", ")))));
}

function renderEngine(engine) {
  document.getElementById("engine-inflight").textContent = fmt(engine.requests_in_flight);
  document.getElementById("engine-tps").textContent = fmt(engine.tokens_per_s);
  push(state.tps, engine.tokens_per_s);
  sparkline(document.getElementById("engine-spark"), state.tps);
  const v = engine.vllm;  // vLLM's own metrics, when the engine is vLLM
  document.getElementById("engine-vllm").textContent = v ? `vLLM: ${fmt(v.running)} running, ${fmt(v.waiting)} waiting, ` +
    `KV cache ${fmt(100 * v.kv_cache_usage)}% used, first token ${v.ttft_s == null ? "–" : fmt(1000 * v.ttft_s) + " ms"}` : "";
  const adapters = Object.entries(engine.adapters).map(([name, v]) => `${name} v${v}`).join(", ");
  document.getElementById("engine-adapters").textContent = adapters ? `serving ${adapters}` : "base model only";
}

function renderPools(pools) {
  const box = document.getElementById("pools");
  if (!pools.length) { box.replaceChildren(el("span", { class: "small" }, "no pool is exporting gauges")); return; }
  let leased = 0, total = 0;
  box.replaceChildren(...pools.map((p) => {
    const size = p.leased + p.idle;
    leased += p.leased; total += size;
    const share = size ? p.leased / size : 0;
    return el("div", { class: "pool" },
      el("div", { class: "small" }, `${p.pool}: ${fmt(p.leased)} leased / ${fmt(size)} warm`),
      el("div", { class: "bar" }, el("div", { style: `width:${Math.round(share * 100)}%` })));
  }));
  push(state.pool, total ? leased / total : 0);
  sparkline(document.getElementById("pool-spark"), state.pool, 1);
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function pollCluster() {
  const status = document.getElementById("status");
  try {
    const cluster = await getJson("/api/cluster");
    state.refreshS = cluster.refresh_s || state.refreshS;
    document.getElementById("ray-link").href = cluster.ray_dashboard_url;
    renderActors(cluster.actors);
    renderNodes(cluster.nodes);
    renderEngine(cluster.engine);
    renderPools(cluster.pools);
    status.className = cluster.ok ? "status live" : "status down";
    status.textContent = cluster.ok ? `live · ${new Date().toLocaleTimeString()}` : cluster.error;
  } catch (err) {
    status.className = "status down";
    status.textContent = `dashboard unreachable: ${err.message}`;
  }
}

async function pollRuns() {
  try {
    const runs = await getJson("/api/runs");
    const select = document.getElementById("run-select");
    if (!state.run && runs.length) state.run = runs[0].name;
    const names = runs.map((r) => r.name);
    if (state.run && !names.includes(state.run)) names.unshift(state.run);
    if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    }
    select.value = state.run;
    if (state.run) renderRun(await getJson(`/api/runs/${encodeURIComponent(state.run)}`));
  } catch (err) {
    const error = document.getElementById("run-error");
    error.hidden = false;
    error.textContent = err.message;
  }
}

async function loop() {
  await Promise.all([pollCluster(), pollRuns()]);
  setTimeout(loop, state.refreshS * 1000);
}

document.getElementById("run-select").addEventListener("change", (event) => {
  state.run = event.target.value;
  history.replaceState(null, "", `?run=${encodeURIComponent(state.run)}`);
  pollRuns();
});
loop();
