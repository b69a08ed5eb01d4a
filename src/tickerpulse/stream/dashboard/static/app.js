// tickerpulse live dashboard. The server pushes a snapshot over Server-Sent Events (/api/events) whenever the
// store changes; if that connection fails the page polls /api/snapshot and tries SSE again later.
// Charts: uPlot (vendored, static/vendor/): time axes, hover values in the legend, drag to zoom (both charts
// together), double-click to reset. Click a ticker anywhere to filter the charts and the posts to it.
// Every string that comes from a post or a dead letter is untrusted: it is only ever set with
// textContent / createTextNode, never innerHTML.
"use strict";

const REFRESH_MS = parseInt(document.body.dataset.refreshMs || "1000", 10) || 1000;
const SSE_RETRY_MS = 15000;  // while polling, try the live connection again this often
const COLORS = ["#4aa3ff", "#f5a623", "#bd10e0", "#50e3c2", "#e74c3c", "#b8e986", "#9013fe"];
const DIM = "#8a96a3", GRID = "#222b33";

const view = { ticker: null, zoom: null };  // zoom: {min, max} in epoch seconds, or null (whole window)
let conn = { es: null, pollTimer: null, retryTimer: null, errors: 0, mode: "connecting" };
let last = null;  // the last snapshot drawn

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function fmt(x, digits = 0) {
  if (x == null || Number.isNaN(x)) return "–";
  return Number(x).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function replace(id, ...nodes) {
  document.getElementById(id).replaceChildren(...nodes);
}

// ---- ticker filter (kept in the URL hash so a filtered view can be bookmarked) --------------------------

function readHash() {
  const m = /(?:^#|&)ticker=([A-Za-z0-9.\-]{1,20})/.exec(location.hash);
  return m ? m[1].toUpperCase() : null;
}

function setTicker(t) {
  t = t ? String(t).toUpperCase() : null;
  if (t === view.ticker) return;
  view.ticker = t;
  view.zoom = null;
  history.replaceState(null, "", t ? `#ticker=${encodeURIComponent(t)}` : location.pathname + location.search);
  connect();
}

function tickerLink(t) {
  return el("a", { class: "tk", title: `show only $${t}`, onclick: (e) => { e.preventDefault(); setTicker(t); } }, "$" + t);
}

// ---- charts ---------------------------------------------------------------------------------------------

// Series arrive per ticker as [{t: ISO, mentions, mean_score}] with empty buckets omitted; uPlot wants one
// x array and one aligned y array per series (null = no point). With `bucketS` every bucket between the first
// and the last gets an x (mentions: an empty bucket is a real 0, not a gap to bridge).
function aligned(series, key, empty, bucketS) {
  const names = Object.keys(series).filter((k) => series[k].length);
  let xs = [...new Set(names.flatMap((n) => series[n].map((p) => Date.parse(p.t) / 1000)))].sort((a, b) => a - b);
  if (bucketS && xs.length > 1 && (xs[xs.length - 1] - xs[0]) / bucketS <= 5000) {
    const grid = [];
    for (let x = xs[0]; x <= xs[xs.length - 1]; x += bucketS) grid.push(x);
    xs = [...new Set([...grid, ...xs])].sort((a, b) => a - b);
  }
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = names.map((n) => {
    const y = new Array(xs.length).fill(empty);
    for (const p of series[n]) y[index.get(Date.parse(p.t) / 1000)] = p[key];
    return y;
  });
  return { names, data: [xs, ...ys] };
}

const charts = {};  // id -> {plot, names}

function chartWidth(box) { return Math.max(280, box.clientWidth); }

function makeChart(id, names, data, kind) {
  const box = document.getElementById(id);
  const sentiment = kind === "sentiment";
  const opts = {
    width: chartWidth(box),
    height: 230,
    cursor: {
      sync: { key: "tp-time", setSeries: true },  // one hover time across both charts
      drag: { x: true, y: false, setScale: false },  // we apply the zoom to both charts ourselves
      bind: { dblclick: () => () => { resetZoom(); return null; } },
    },
    select: { show: true },
    scales: { x: { time: true }, y: sentiment ? { range: [-1, 1] } : { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [
      { stroke: DIM, grid: { stroke: GRID }, ticks: { stroke: GRID } },
      { stroke: DIM, grid: { stroke: GRID }, ticks: { stroke: GRID }, size: 44,
        incrs: sentiment ? undefined : [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 1e5, 1e6],  // whole posts
        values: sentiment ? (u, vals) => vals.map((v) => (v > 0 ? "+" : "") + v.toFixed(1)) : (u, vals) => vals.map((v) => fmt(v)) },
    ],
    series: [
      { label: "time", value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleString()) },
      ...names.map((n, i) => ({
        label: n,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        spanGaps: sentiment,
        fill: sentiment ? undefined : COLORS[i % COLORS.length] + "22",
        paths: sentiment ? undefined : uPlot.paths.stepped({ align: 1 }),
        points: { show: sentiment, size: 5 },
        value: sentiment ? (u, v) => (v == null ? "–" : (v > 0 ? "+" : "") + v.toFixed(2))
                         : (u, v) => (v == null ? "–" : fmt(v) + (v === 1 ? " post" : " posts")),
      })),
    ],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 4) return;
        const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        applyZoom({ min, max });
      }],
    },
  };
  const plot = new uPlot(opts, data, box);
  plot.root.__plot = plot;  // a handle for the browser console and the browser tests
  return { plot, names };
}

function drawChart(id, series, key, kind, bucketS) {
  const box = document.getElementById(id);
  const { names, data } = kind === "sentiment" ? aligned(series, key, null) : aligned(series, key, 0, bucketS);
  const old = charts[id];
  if (!names.length) {
    if (old) { old.plot.destroy(); delete charts[id]; }
    box.replaceChildren(el("div", { class: "empty" }, "no data in this window yet"));
    return;
  }
  if (old && old.names.join() === names.join()) {
    old.plot.setData(data, view.zoom == null);  // live update; a zoomed view keeps its range
  } else {
    if (old) old.plot.destroy();
    box.replaceChildren();
    charts[id] = makeChart(id, names, data, kind);
  }
  if (view.zoom) charts[id].plot.setScale("x", view.zoom);
}

function applyZoom(z) {
  view.zoom = z;
  for (const c of Object.values(charts)) c.plot.setScale("x", z);
  document.getElementById("zoom-reset").hidden = false;
}

function resetZoom() {
  view.zoom = null;
  document.getElementById("zoom-reset").hidden = true;
  if (last) render(last);
}

window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(charts)) c.plot.setSize({ width: chartWidth(document.getElementById(id)), height: 230 });
});

// ---- panels ---------------------------------------------------------------------------------------------

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

function tickerTable(rows, valueKey, label) {
  if (!rows.length) return el("div", { class: "empty" }, "no tickers yet");
  const max = Math.max(...rows.map((r) => Math.abs(r[valueKey])), 1e-9);
  const body = rows.map((r) => el("tr", { class: "pick" + (r.ticker === view.ticker ? " sel" : ""), title: `click: show only $${r.ticker}`,
                                        "data-ticker": r.ticker, onclick: () => setTicker(r.ticker === view.ticker ? null : r.ticker) },
    el("td", { class: "tk" }, r.ticker + (r.asset_class === "crypto" ? " ◦" : "")),
    el("td", { style: "width:40%" }, el("div", { class: "bar", style: `width:${(100 * Math.abs(r[valueKey])) / max}%;background:${valueKey === "mentions" ? "#4aa3ff" : r.mean_score >= 0 ? "#2ecc71" : "#e74c3c"}` })),
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
  if (!docs.length) return [el("div", { class: "empty" }, view.ticker ? `no posts about $${view.ticker} yet` : "waiting for posts…")];
  return docs.map((d) => el("div", { class: "post" },
    el("div", { class: "meta" },
      tickerLink(d.ticker), " ",
      el("span", { class: "badge " + (["positive", "negative", "neutral"].includes(d.sentiment) ? d.sentiment : "neutral") }, d.sentiment), " ",
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

function filterChip(s) {
  const box = document.getElementById("filter");
  box.classList.toggle("on", !!s.ticker);
  if (!s.ticker) return;
  const f = s.focus;
  document.getElementById("filter-text").textContent = f
    ? `$${s.ticker}: ${fmt(f.mentions)} mentions, mean ${(f.mean_score > 0 ? "+" : "") + f.mean_score.toFixed(2)}, ${f.positive}↑ ${f.negative}↓`
    : `$${s.ticker}: no mentions in this window`;
}

function render(s) {
  last = s;
  kpis(s);
  filterChip(s);
  drawChart("chart", s.series, "mean_score", "sentiment");
  drawChart("volume", s.series, "mentions", "volume", s.bucket_s);
  replace("mentions", tickerTable(s.top_mentions, "mentions", "mentions"));
  replace("bullish", tickerTable(s.top_bullish, "mean_score", "mean"));
  replace("bearish", tickerTable(s.top_bearish, "mean_score", "mean"));
  replace("health", healthView(s.health));
  document.getElementById("posts-hint").textContent = s.ticker ? `$${s.ticker} only` : "click a $ticker to filter";
  replace("posts", ...postsView(s.latest));
  replace("dead", ...deadView(s.dead_letters));
  showStatus(`updated ${new Date().toLocaleTimeString()} · ${fmt(s.counts.posts)} posts · ${s.bucket_s}s buckets · pipeline ${s.health.status}`);
}

// ---- transport: SSE first, polling as the fallback ------------------------------------------------------

function query() {
  const p = new URLSearchParams({ window: document.getElementById("window").value, top: "10", series: "5" });
  if (view.ticker) p.set("ticker", view.ticker);
  return p.toString();
}

function setMode(mode) {
  conn.mode = mode;
  document.getElementById("live").className = "live " + mode;
  document.getElementById("live").title = { sse: "live: updates pushed by the server", poll: "polling (live connection unavailable)", down: "disconnected" }[mode] || "";
}

function showStatus(text) {
  const how = conn.mode === "sse" ? "live" : conn.mode === "poll" ? `polling every ${REFRESH_MS / 1000}s` : "";
  document.getElementById("status").textContent = how ? `${how} · ${text}` : text;
}

function stopAll() {
  if (conn.es) { conn.es.close(); conn.es = null; }
  clearTimeout(conn.pollTimer); clearTimeout(conn.retryTimer);
  conn.pollTimer = conn.retryTimer = null;
}

function connect() {
  stopAll();
  conn.errors = 0;
  if (!window.EventSource) { startPolling(); return; }
  const es = new EventSource(`/api/events?${query()}`);
  conn.es = es;
  es.addEventListener("snapshot", (e) => {
    conn.errors = 0;
    if (conn.mode !== "sse") setMode("sse");
    try { render(JSON.parse(e.data)); } catch (err) { showStatus(`bad update (${err.message})`); }
  });
  es.addEventListener("error", (e) => {
    if (e.data) { showStatus(`store unavailable: ${JSON.parse(e.data).error}`); return; }  // a server-sent error event
    // a dropped connection: EventSource reconnects by itself; after repeated failures poll instead
    conn.errors += 1;
    if (es.readyState === EventSource.CLOSED || conn.errors >= 3) startPolling();
  });
}

function startPolling() {
  stopAll();
  setMode("poll");
  poll();
  if (window.EventSource) conn.retryTimer = setTimeout(connect, SSE_RETRY_MS);
}

async function poll() {
  try {
    const res = await fetch(`/api/snapshot?${query()}`, { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    if (conn.mode !== "poll") return;  // the live connection came back meanwhile
    render(await res.json());
  } catch (err) {
    setMode("poll");
    showStatus(`cannot reach the dashboard API (${err.message}); retrying`);
  } finally {
    if (conn.mode === "poll" && !conn.es) conn.pollTimer = setTimeout(poll, REFRESH_MS);
  }
}

document.getElementById("window").addEventListener("change", () => { view.zoom = null; connect(); });
document.getElementById("filter-clear").addEventListener("click", () => setTicker(null));
document.getElementById("zoom-reset").addEventListener("click", resetZoom);
window.addEventListener("hashchange", () => setTicker(readHash()));
view.ticker = readHash();
setMode("down");
connect();
