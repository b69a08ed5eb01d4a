"""The live dashboard: a small FastAPI app over any `Store` + one static page that polls it.

JSON endpoints (all read-only, all through the Store protocol, so DuckDB and Elasticsearch both work):
  GET /api/snapshot?window=&top=&series=   everything the page draws, in one round trip
  GET /api/summary     counts + pipeline health
  GET /api/tickers?window=&limit=&by=mentions|bullish|bearish
  GET /api/timeseries?ticker=&bucket=&window=
  GET /api/latest?limit=&ticker=
  GET /api/dead_letters?limit=
  GET /health
The page (`static/index.html` + `static/app.js`) draws its charts as inline SVG with no third-party code
(it must work with no internet) and inserts every post text with `textContent` (posts are untrusted).

A snapshot is cached for `cache_s` seconds: many open browser tabs cost one store read per interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from tickerpulse.stream.store.base import Store, percentiles

STALE_S = 15.0  # a running component without a heartbeat for this long is reported stale


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


def snapshot(store: Store, window_s: float = 3600, top_n: int = 10, series: int = 5) -> dict[str, Any]:
    """Everything the page shows, read in one store session."""
    with _session(store):
        counts = store.counts()
        by_mentions = store.ticker_stats(window_s, top_n, "mentions")
        bullish = store.ticker_stats(window_s, top_n, "bullish")
        bearish = store.ticker_stats(window_s, top_n, "bearish")
        bucket = _bucket(store, by_mentions[0].ticker if by_mentions else None, window_s)
        ts = {s.ticker: [p.to_dict() for p in store.timeseries(s.ticker, bucket, window_s)] for s in by_mentions[:series]}
        latest = [d.to_dict() for d in store.latest(25)]
        dead = [d.to_dict() for d in store.dead_letters(10)]
        h = health(store, counts)
    return {
        "generated_at": time.time(),
        "window_s": window_s,
        "bucket_s": bucket,
        "counts": counts,
        "health": h,
        "top_mentions": [s.to_dict() for s in by_mentions],
        "top_bullish": [s.to_dict() for s in bullish],
        "top_bearish": [s.to_dict() for s in bearish],
        "series": ts,
        "latest": latest,
        "dead_letters": dead,
    }


def create_app(store_factory: Callable[[], Store], title: str = "tickerpulse", refresh_ms: int = 2000,
               cache_s: float = 1.0) -> Any:
    """The FastAPI app. `store_factory` is called once (lazily) and must return a read-capable Store."""
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    state: dict[str, Any] = {"store": None, "cache": {}}

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
        value = fn()
        with lock:
            state["cache"][key] = (time.monotonic(), value)
        return value

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        html = static.joinpath("index.html").read_text("utf-8")
        html = html.replace("{{TITLE}}", title).replace("{{REFRESH_MS}}", str(int(refresh_ms)))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}")
    def asset(name: str) -> Response:
        types = {".js": "text/javascript", ".css": "text/css"}
        ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if ext not in types or "/" in name or name.startswith("."):
            raise HTTPException(404)
        f = static.joinpath(name)
        if not f.is_file():
            raise HTTPException(404)
        return Response(f.read_text("utf-8"), media_type=types[ext], headers={"Cache-Control": "no-store"})

    @app.get("/api/snapshot")
    def api_snapshot(window: float = Query(3600, gt=0, le=366 * 86400), top: int = Query(10, ge=1, le=100),
                     series: int = Query(5, ge=0, le=20)) -> JSONResponse:
        return JSONResponse(cached(("snap", window, top, series), lambda: snapshot(store(), window, top, series)))

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
        return [d.to_dict() for d in store().dead_letters(limit)]

    @app.get("/health")
    def api_health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(store_factory: Callable[[], Store], host: str = "127.0.0.1", port: int = 8050, title: str = "tickerpulse",
          refresh_ms: int = 2000, log_level: str = "warning") -> None:
    """Run the dashboard with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store_factory, title=title, refresh_ms=refresh_ms), host=host, port=port,
                log_level=log_level)
