// tickerpulse live dashboard: polls /api/snapshot and redraws. No third-party code (works offline).
// Every string that comes from a post or a dead letter is untrusted: it is only ever set with
// textContent / createTextNode, never innerHTML.
"use strict";

const REFRESH_MS = parseInt(document.body.dataset.refreshMs || "2000", 10) || 2000;
const COLORS = ["#4aa3ff", "#f5a623", "#bd10e0", "#50e3c2", "#e74c3c", "#b8e986", "#9013fe"];
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = String(text);
  return node;
}

function fmt(x, digits = 0) {
  if (x == null || Number.isNaN(x)) return "–";
  return Number(x).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function replace(id, ...nodes) {
  const box = document.getElementById(id);
  box.replaceChildren(...nodes);
}

function kpis(s) {
  const c = s.counts, h = s.health;
  const items = [
    ["posts processed", fmt(c.posts)],
    ["sentiment docs", fmt(c.docs)],
    ["tickers", fmt(c.tickers)],
    ["posts w/o ticker", fmt(c.posts_without_ticker)],
    ["posts / s", fmt(h.posts_per_s, 1)],
    ["lag (records)", fmt(h.lag_records)],
    ["lag p95", h.lag_ms && h.lag_ms.p95 != null ? fmt(h.lag_ms.p95 / 1000, 1) + " s" : "–"],
    ["dead letters", fmt(c.dead_letters)],
  ];
  replace("kpis", ...items.map(([l, v]) => el("div", { class: "kpi" }, el("div", { class: "v" }, v), el("div", { class: "l" }, l))));
}

function lineChart(series, windowS) {
  const names = Object.keys(series).filter((k) => series[k].length);
  if (!names.length) return [el("div", { class: "empty" }, "no data in this window yet")];
  const W = 760, H = 260, L = 40, R = 10, T = 10, B = 24;
  let t0 = Infinity, t1 = -Infinity;
  for (const n of names) for (const p of series[n]) { const t = Date.parse(p.t); t0 = Math.min(t0, t); t1 = Math.max(t1, t); }
  if (t1 <= t0) t1 = t0 + 60000;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + ((1 - v) / 2) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "sentiment over time" });
  for (const v of [1, 0.5, 0, -0.5, -1]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: v === 0 ? "#3a4550" : "#222b33" }));
    root.append(svg("text", { x: 4, y: y(v) + 4 }, (v > 0 ? "+" : "") + v));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const opts = t1 - t0 < 5 * 60000 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    root.append(svg("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, new Date(t).toLocaleTimeString([], opts)));
  }
  names.forEach((n, i) => {
    const pts = series[n].map((p) => [x(Date.parse(p.t)), y(p.mean_score), p]);
    const color = COLORS[i % COLORS.length];
    root.append(svg("polyline", { points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    for (const [a, b, p] of pts) {
      const dot = svg("circle", { cx: a.toFixed(1), cy: b.toFixed(1), r: Math.min(6, 2 + Math.sqrt(p.mentions)), fill: color });
      dot.append(svg("title", {}, `${n} ${p.t}: mean ${p.mean_score.toFixed(2)}, ${p.mentions} mentions`));
      root.append(dot);
    }
  });
  return [root];
}

function tickerTable(rows, valueKey, label) {
  if (!rows.length) return el("div", { class: "empty" }, "no tickers yet");
  const max = Math.max(...rows.map((r) => Math.abs(r[valueKey])), 1e-9);
  const body = rows.map((r) => el("tr", {},
    el("td", { class: "tk" }, r.ticker + (r.asset_class === "crypto" ? " ◦" : "")),
    el("td", { style: "width:45%" }, el("div", { class: "bar", style: `width:${(100 * Math.abs(r[valueKey])) / max}%;background:${valueKey === "mentions" ? "#4aa3ff" : r.mean_score >= 0 ? "#2ecc71" : "#e74c3c"}` })),
    el("td", { class: "num" }, valueKey === "mentions" ? fmt(r.mentions) : fmt(r.mean_score, 2)),
    el("td", { class: "num" }, fmt(r.mentions_per_min, 1) + "/min"),
    el("td", { class: "num", title: "bullish / bearish posts" }, `${r.positive}↑ ${r.negative}↓`)));
  return el("table", {}, el("tr", {}, el("th", {}, "ticker"), el("th", {}, ""), el("th", {}, label), el("th", {}, "rate"), el("th", {}, "bull/bear")), ...body);
}

function healthView(h) {
  const rows = [
    ["status", h.status],
    ["scorer", `${h.scorer || "–"} (${h.model_version || "–"})`],
    ["posts / s", fmt(h.posts_per_s, 2)],
    ["lag (records behind)", fmt(h.lag_records)],
    ["lag p50 / p95", h.lag_ms && h.lag_ms.p50 != null ? `${fmt(h.lag_ms.p50)} / ${fmt(h.lag_ms.p95)} ms` : "–"],
    ["model call p50 / p95", h.model_ms && h.model_ms.p50 != null ? `${fmt(h.model_ms.p50)} / ${fmt(h.model_ms.p95)} ms` : "–"],
    ["model ms / item", fmt(h.model_ms_per_item, 1)],
    ["dead letters", fmt(h.dead_letters)],
  ];
  return el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

function postsView(docs) {
  if (!docs.length) return [el("div", { class: "empty" }, "waiting for posts…")];
  return docs.map((d) => el("div", { class: "post" },
    el("div", { class: "meta" },
      el("span", { class: "tk" }, "$" + d.ticker), " ",
      el("span", { class: "badge " + d.sentiment }, d.sentiment), " ",
      `score ${Number(d.score).toFixed(2)} · ${d.source}${d.channel ? " / " + d.channel : ""} · ${new Date(d["@timestamp"]).toLocaleTimeString()}`),
    el("div", { class: "text" }, d.text),
    d.reasoning ? el("div", { class: "why" }, d.reasoning) : ""));
}

function deadView(items) {
  if (!items.length) return [el("div", { class: "empty" }, "none")];
  return [el("table", {}, el("tr", {}, el("th", {}, "stage"), el("th", {}, "reason"), el("th", {}, "tries")),
    ...items.map((d) => el("tr", {},
      el("td", {}, d.stage),
      el("td", { class: "dl" }, `${d.code}: ${d.reason} (${fmt(d.payload_bytes)} bytes)`),
      el("td", { class: "num" }, d.attempts))))];
}

let timer = null;

async function refresh() {
  const windowS = document.getElementById("window").value;
  try {
    const res = await fetch(`/api/snapshot?window=${windowS}&top=10&series=5`, { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const s = await res.json();
    kpis(s);
    const names = Object.keys(s.series);
    replace("legend", ...names.map((n, i) => el("span", { style: `color:${COLORS[i % COLORS.length]}` }, "● " + n)));
    replace("chart", ...lineChart(s.series, s.window_s));
    replace("mentions", tickerTable(s.top_mentions, "mentions", "mentions"));
    replace("bullish", tickerTable(s.top_bullish, "mean_score", "mean"));
    replace("bearish", tickerTable(s.top_bearish, "mean_score", "mean"));
    replace("health", healthView(s.health));
    replace("posts", ...postsView(s.latest));
    replace("dead", ...deadView(s.dead_letters));
    document.getElementById("status").textContent =
      `updated ${new Date().toLocaleTimeString()} · ${s.counts.posts} posts · pipeline ${s.health.status}`;
  } catch (err) {
    document.getElementById("status").textContent = `cannot reach the dashboard API (${err.message}); retrying`;
  } finally {
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

document.getElementById("window").addEventListener("change", () => { clearTimeout(timer); refresh(); });
refresh();
