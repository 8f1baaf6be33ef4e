// Aisle's live dashboard: polls /api/dashboard every REFRESH_MS and redraws four uPlot charts and the
// experiments table. Plain JavaScript, no build step; uPlot is loaded by index.html from /static.
"use strict";

const REFRESH_MS = 2000;
const charts = {};

function makeChart(id, series) {
  const el = document.getElementById(id);
  const opts = {
    width: Math.max(el.clientWidth, 480),
    height: 220,
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: true }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  const data = [[], ...series.map(() => [])];
  return new uPlot(opts, data, el);
}

function column(points, key) {
  return points.map((p) => (p[key] === null || p[key] === undefined ? null : p[key]));
}

function fmtRate(r) {
  if (!r) return "–";
  const pct = (x) => (100 * x).toFixed(2) + "%";
  return `${pct(r.rate)} [${pct(r.low)}, ${pct(r.high)}]`;
}

function renderExperiments(experiments) {
  const root = document.getElementById("experiments");
  root.textContent = "";
  if (!experiments.length) {
    const p = document.createElement("p");
    p.textContent = "No experiment is running.";
    root.appendChild(p);
    return;
  }
  for (const exp of experiments) {
    const h = document.createElement("h3");
    h.textContent = exp.name;
    root.appendChild(h);
    const table = document.createElement("table");
    table.className = "experiment";
    const head = table.insertRow();
    for (const title of ["variant", "answers", "clicks", "click rate (95% CI)", "add to cart", "purchases",
                         "purchase rate (95% CI)", "revenue"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.appendChild(th);
    }
    for (const v of exp.variants) {
      const row = table.insertRow();
      for (const value of [v.variant, v.answers, v.click, fmtRate(v.ctr), v.add_to_cart, v.purchase,
                           fmtRate(v.purchase_rate), v.revenue.toFixed(2)]) {
        row.insertCell().textContent = value;
      }
    }
    root.appendChild(table);
  }
}

async function refresh() {
  let view;
  try {
    const response = await fetch("/api/dashboard", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    view = await response.json();
  } catch (err) {
    document.getElementById("updated").textContent = `no data (${err.message}); retrying`;
    return;
  }
  const points = view.points;
  const t = column(points, "t");
  charts.rate.setData([t, column(points, "recommend_per_s"), column(points, "calls_per_s"),
                       column(points, "errors_per_s")]);
  charts.latency.setData([t, column(points, "p50_ms"), column(points, "p95_ms"), column(points, "p99_ms")]);
  charts.lag.setData([t, column(points, "worker_lag"), column(points, "freshness_s")]);
  charts.backfill.setData([t, column(points, "backfill_rate")]);
  document.getElementById("model").textContent = `model: ${view.models.join(", ") || "none (real-time sources)"}`;
  document.getElementById("updated").textContent =
    `${points.length} points, updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.points = String(points.length);
  renderExperiments(view.experiments);
}

function start() {
  charts.rate = makeChart("chart-rate", [["Recommend/s", "#2b6cb0"], ["all calls/s", "#718096"],
                                         ["errors/s", "#c53030"]]);
  charts.latency = makeChart("chart-latency", [["p50", "#2f855a"], ["p95", "#d69e2e"], ["p99", "#c53030"]]);
  charts.lag = makeChart("chart-lag", [["worker lag", "#6b46c1"], ["freshness s", "#2b6cb0"]]);
  charts.backfill = makeChart("chart-backfill", [["backfill rate", "#dd6b20"]]);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
