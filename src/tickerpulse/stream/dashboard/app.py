"""The live dashboard: a small FastAPI app over any `Store` + one static page that the server pushes to.

JSON endpoints (all read-only, all through the Store protocol, so DuckDB and Elasticsearch both work):
  GET /api/events?window=&top=&series=&ticker=   Server-Sent Events: a `snapshot` event whenever the data
                                                  change (checked every `refresh_ms`), keep-alive comments
  GET /api/snapshot?window=&top=&series=&ticker= the same snapshot once (the page's fallback when SSE drops)
  GET /api/summary     counts + pipeline health
  GET /api/tickers?window=&limit=&by=mentions|bullish|bearish
  GET /api/timeseries?ticker=&bucket=&window=
  GET /api/latest?limit=&ticker=
  GET /api/dead_letters?limit=
  GET /health
The page (`static/index.html` + `static/app.js`) draws time-axis charts with uPlot, vendored under
`static/vendor/` (MIT, works with no internet), and inserts every post text with `textContent` (posts are
untrusted); a Content-Security-Policy allows scripts from this origin only.

A snapshot is cached for `cache_s` seconds: many open tabs (SSE or polling) cost one store read per interval.
Known limitations: at most `max_streams` SSE connections at once (more get 503 and the page polls), and each
lasts at most `stream_max_s` seconds (the browser reconnects by itself), so a tab never pins a worker forever.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from tickerpulse.stream.store.base import Store, percentiles

STALE_S = 15.0  # a running component without a heartbeat for this long is reported stale
TICKER_RE = re.compile(r"^[A-Za-z0-9.\-]{1,20}$")  # what a ticker filter may look like (the store's symbols)
# Scripts from this origin only: a post that smuggles markup past textContent still could not run code.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


def _session(store: Store) -> contextlib.AbstractContextManager[Any]:
    s = getattr(store, "session", None)
    return s() if callable(s) else contextlib.nullcontext()


def health(store: Store, counts: dict[str, int]) -> dict[str, Any]:
    """Pipeline health from the processor heartbeat and a sample of recent documents."""
    beats = store.heartbeats()
    proc = beats.get("processor", {})
    sample = store.latency_sample(2000)
    lag = percentiles([s["lag_ms"] for s in sample], (50, 95))
    model = percentiles([s["latency_ms"] for s in sample], (50, 95))
    status = proc.get("status", "not started")
    if status in ("running", "idle") and proc.get("updated"):
        from tickerpulse.stream.schema import to_utc

        age = time.time() - to_utc(proc["updated"]).timestamp()
        if age > STALE_S:
            status = f"stale ({age:.0f}s since last heartbeat)"
    return {
        "status": status,
        "posts_per_s": proc.get("posts_per_s"),
        "lag_records": proc.get("lag_records"),
        "lag_ms": lag,
        "model_ms": model,
        "model_ms_per_item": proc.get("model_ms_per_item"),
        "dead_letters": counts.get("dead_letters", 0),
        "model_version": proc.get("model_version"),
        "scorer": proc.get("scorer"),
        "components": beats,
    }


def _bucket(store: Store, ticker: str | None, window_s: float) -> int:
    """About 60 buckets over the window, finer when the data cover only a sliver of it (a fresh stream or
    a fast replay would otherwise be one dot)."""
    bucket = max(1, int(window_s // 60))
    while ticker and bucket > 1 and len(store.timeseries(ticker, bucket, window_s)) < 6:
        bucket = max(1, bucket // 10)
    return bucket


def snapshot(store: Store, window_s: float = 3600, top_n: int = 10, series: int = 5,
             ticker: str | None = None) -> dict[str, Any]:
    """Everything the page shows, read in one store session. With `ticker`, the charts and the latest
    posts show that ticker only and `focus` holds its aggregate (None when it has no mentions in the window);
    the rankings and counts stay global so another ticker can be picked."""
    ticker = ticker.upper() if ticker else None
    with _session(store):
        counts = store.counts()
        by_mentions = store.ticker_stats(window_s, top_n, "mentions")
        bullish = store.ticker_stats(window_s, top_n, "bullish")
        bearish = store.ticker_stats(window_s, top_n, "bearish")
        focus = None
        if ticker:
            names = [ticker] if series else []
            focus = next((s.to_dict() for s in store.ticker_stats(window_s, 10_000, "mentions") if s.ticker == ticker),
                         None)
        else:
            names = [s.ticker for s in by_mentions[:series]]
        bucket = _bucket(store, names[0] if names else None, window_s)
        ts = {n: [p.to_dict() for p in store.timeseries(n, bucket, window_s)] for n in names}
        latest = [d.to_dict() for d in store.latest(25, ticker)]
        dead = [d.to_dict(payload_chars=200) for d in store.dead_letters(10)]  # payloads reach 128 KB: a preview
        h = health(store, counts)
    return {
        "generated_at": time.time(),
        "window_s": window_s,
        "bucket_s": bucket,
        "ticker": ticker,
        "focus": focus,
        "counts": counts,
        "health": h,
        "top_mentions": [s.to_dict() for s in by_mentions],
        "top_bullish": [s.to_dict() for s in bullish],
        "top_bearish": [s.to_dict() for s in bearish],
        "series": ts,
        "latest": latest,
        "dead_letters": dead,
    }


def _fingerprint(snap: dict[str, Any]) -> str:
    """What decides whether a pushed snapshot is new: everything but its own timestamp."""
    return json.dumps({k: v for k, v in snap.items() if k != "generated_at"}, sort_keys=True, default=str)


def create_app(store_factory: Callable[[], Store], title: str = "tickerpulse", refresh_ms: int = 1000,
               cache_s: float = 1.0, max_streams: int = 32, stream_max_s: float = 600.0) -> Any:
    """The FastAPI app. `store_factory` is called once (lazily) and must return a read-capable Store.

    Args:
        refresh_ms: how often an SSE connection looks for new data (and the page polls when SSE is down).
        cache_s: snapshots younger than this are reused across requests and connections.
        max_streams: SSE connections served at once; more get 503 (the page then polls).
        stream_max_s: an SSE connection ends after this long; EventSource reconnects on its own.
    """
    import anyio
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.sse import EventSourceResponse, ServerSentEvent

    state: dict[str, Any] = {"store": None, "cache": {}, "streams": 0}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        if state["store"] is not None:
            state["store"].close()

    app = FastAPI(title=f"{title} dashboard", docs_url=None, redoc_url=None, lifespan=lifespan)
    lock = threading.Lock()
    static = resources.files("tickerpulse.stream.dashboard").joinpath("static")

    def store() -> Store:
        with lock:
            if state["store"] is None:
                state["store"] = store_factory()
            return state["store"]

    def cached(key: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        with lock:
            hit = state["cache"].get(key)
            if hit and time.monotonic() - hit[0] < cache_s:
                return hit[1]
            if len(state["cache"]) > 256:  # keys come from query strings: keep the cache bounded
                state["cache"].clear()
        value = fn()
        with lock:
            state["cache"][key] = (time.monotonic(), value)
        return value

    def ticker_param(ticker: str | None = Query(None, max_length=20)) -> str | None:
        if ticker is None or ticker == "":
            return None
        if not TICKER_RE.match(ticker):
            raise HTTPException(422, "ticker: 1-20 letters, digits, '.' or '-'")
        return ticker.upper()

    def snap(window: float, top: int, series: int, ticker: str | None) -> dict[str, Any]:
        return cached(("snap", window, top, series, ticker), lambda: snapshot(store(), window, top, series, ticker))

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        html = static.joinpath("index.html").read_text("utf-8")
        html = html.replace("{{TITLE}}", title).replace("{{REFRESH_MS}}", str(int(refresh_ms)))
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                                           "X-Content-Type-Options": "nosniff"})

    @app.get("/static/{path:path}")
    def asset(path: str) -> Response:
        parts = path.split("/")
        ext = "." + path.rsplit(".", 1)[-1] if "." in parts[-1] else ""
        if ext not in ASSET_TYPES or len(parts) > 2 or any(not p or p.startswith(".") for p in parts):
            raise HTTPException(404)
        f = static.joinpath(*parts)
        if not f.is_file():
            raise HTTPException(404)
        # the vendored library never changes within a release; our own files may while developing
        cache = "public, max-age=86400" if parts[0] == "vendor" else "no-store"
        return Response(f.read_text("utf-8"), media_type=ASSET_TYPES[ext],
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})

    @app.get("/api/snapshot")
    def api_snapshot(window: float = Query(3600, gt=0, le=366 * 86400), top: int = Query(10, ge=1, le=100),
                     series: int = Query(5, ge=0, le=20),
                     ticker: str | None = Depends(ticker_param)) -> JSONResponse:
        return JSONResponse(snap(window, top, series, ticker))

    def stream_slot() -> None:
        if state["streams"] >= max_streams:
            raise HTTPException(503, f"too many live connections ({max_streams}); poll /api/snapshot",
                                headers={"Retry-After": "10"})

    @app.get("/api/events", response_class=EventSourceResponse, dependencies=[Depends(stream_slot)])
    async def api_events(window: float = Query(3600, gt=0, le=366 * 86400), top: int = Query(10, ge=1, le=100),
                         series: int = Query(5, ge=0, le=20),
                         ticker: str | None = Depends(ticker_param)) -> AsyncIterator[ServerSentEvent]:
        with lock:
            state["streams"] += 1
        try:
            last, started = None, time.monotonic()
            while time.monotonic() - started < stream_max_s:
                try:
                    s = await run_in_threadpool(snap, window, top, series, ticker)
                except Exception as exc:  # noqa: BLE001 - the store is down or locked: tell the page, keep going
                    yield ServerSentEvent(event="error", data={"error": f"{type(exc).__name__}: {exc}"[:300]})
                    last = None
                else:
                    fp = _fingerprint(s)
                    if fp != last:
                        yield ServerSentEvent(event="snapshot", data=s, retry=max(500, int(refresh_ms)))
                        last = fp
                await anyio.sleep(refresh_ms / 1000)
        finally:
            with lock:
                state["streams"] -= 1

    @app.get("/api/summary")
    def api_summary() -> dict[str, Any]:
        def build() -> dict[str, Any]:
            st = store()
            with _session(st):
                counts = st.counts()
                return {"counts": counts, "health": health(st, counts)}

        return cached(("summary",), build)

    @app.get("/api/tickers")
    def api_tickers(window: float = Query(3600, gt=0), limit: int = Query(20, ge=1, le=500),
                    by: str = Query("mentions", pattern="^(mentions|bullish|bearish)$")) -> list[dict[str, Any]]:
        return [s.to_dict() for s in store().ticker_stats(window, limit, by)]  # type: ignore[arg-type]

    @app.get("/api/timeseries")
    def api_timeseries(ticker: str = Query(..., min_length=1, max_length=20), bucket: int = Query(60, ge=1),
                       window: float = Query(3600, gt=0)) -> list[dict[str, Any]]:
        return [p.to_dict() for p in store().timeseries(ticker.upper(), bucket, window)]

    @app.get("/api/latest")
    def api_latest(limit: int = Query(20, ge=1, le=500), ticker: str | None = Query(None, max_length=20)) -> list[dict[str, Any]]:
        return [d.to_dict() for d in store().latest(limit, ticker.upper() if ticker else None)]

    @app.get("/api/dead_letters")
    def api_dead(limit: int = Query(20, ge=1, le=500)) -> list[dict[str, Any]]:
        return [d.to_dict(payload_chars=1000) for d in store().dead_letters(limit)]  # whole ones: `stream dlq list`

    @app.get("/health")
    def api_health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(store_factory: Callable[[], Store], host: str = "127.0.0.1", port: int = 8050, title: str = "tickerpulse",
          refresh_ms: int = 1000, log_level: str = "warning") -> None:
    """Run the dashboard with uvicorn until interrupted. Open SSE connections never end on their own, so
    shutdown waits at most 3 s for them before closing them."""
    import uvicorn

    uvicorn.run(create_app(store_factory, title=title, refresh_ms=refresh_ms), host=host, port=port,
                log_level=log_level, timeout_graceful_shutdown=3)
