"""The dashboard app over a real DuckDB store: the ticker filter, updates pushed over Server-Sent Events
(only when the data change), bounded SSE connections, static files (vendored uPlot, no path escapes) and
hostile query strings."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stream.dashboard.util import TICKERS, make_docs, serving, sse_events, wait_for, write_in_another_process
from tickerpulse.stream.dashboard.app import CSP, create_app, snapshot
from tickerpulse.stream.store.duckdb import DuckDBStore


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    db = tmp_path / "store.duckdb"
    w = DuckDBStore(db)
    w.upsert(make_docs(60))
    w.close()
    return db


def test_snapshot_all_tickers_and_one_ticker(filled: Path) -> None:
    store = DuckDBStore(filled, read_only=True)
    everything = snapshot(store, window_s=3600, top_n=10, series=3)
    assert everything["ticker"] is None and everything["focus"] is None
    assert len(everything["series"]) == 3 and {d["ticker"] for d in everything["latest"]} == set(TICKERS)

    one = snapshot(store, window_s=3600, top_n=10, series=3, ticker="nvda")
    assert one["ticker"] == "NVDA" and list(one["series"]) == ["NVDA"]
    assert {d["ticker"] for d in one["latest"]} == {"NVDA"}
    assert one["focus"]["ticker"] == "NVDA" and one["focus"]["mentions"] == 10
    assert sum(p["mentions"] for p in one["series"]["NVDA"]) == 10
    assert one["top_mentions"] == everything["top_mentions"]  # rankings stay global: another ticker can be picked
    nobody = snapshot(store, ticker="ZZZZ")
    assert nobody["focus"] is None and nobody["series"] == {"ZZZZ": []} and nobody["latest"] == []


def test_events_push_a_snapshot_when_the_store_changes_and_only_then(filled: Path) -> None:
    app = create_app(lambda: DuckDBStore(filled, read_only=True), refresh_ms=200, cache_s=0.1)
    with serving(app) as base, httpx.stream("GET", f"{base}/api/events?window=3600&ticker=AAPL",
                                            timeout=httpx.Timeout(10, read=3)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r, time.monotonic() + 30)
        kind, first = next(events)
        assert kind == "snapshot" and first["counts"]["docs"] == 60 and first["ticker"] == "AAPL"
        # nothing changed: no event for a while (the server checks every 200 ms)
        with pytest.raises(httpx.ReadTimeout):
            next(events)

    with serving(create_app(lambda: DuckDBStore(filled, read_only=True), refresh_ms=200, cache_s=0.1)) as base, \
            httpx.stream("GET", f"{base}/api/events", timeout=httpx.Timeout(10, read=5)) as r:
        events = sse_events(r, time.monotonic() + 30)
        assert next(events)[1]["counts"]["docs"] == 60
        write_in_another_process(filled, 7, start=60)  # as the processor does
        kind, second = next(events)
        assert kind == "snapshot" and second["counts"]["docs"] == 67


def test_events_are_bounded(filled: Path) -> None:
    app = create_app(lambda: DuckDBStore(filled, read_only=True), refresh_ms=200, max_streams=1, stream_max_s=2)
    with serving(app) as base:
        with httpx.stream("GET", f"{base}/api/events", timeout=10) as r:
            events = sse_events(r, time.monotonic() + 20)  # keep it referenced: closing it closes the stream
            assert next(events)[0] == "snapshot"
            busy = httpx.get(f"{base}/api/events", timeout=5)
            assert busy.status_code == 503 and "poll /api/snapshot" in busy.text
            t0 = time.monotonic()
            list(events)  # the server ends the connection after stream_max_s
            assert time.monotonic() - t0 < 10

        def slot_free() -> bool:
            with httpx.stream("GET", f"{base}/api/events", timeout=5) as again:
                return again.status_code == 200

        wait_for(slot_free, 10, "the SSE slot to be released")
        wait_for(lambda: httpx.get(f"{base}/api/events?ticker=<b>", timeout=5).status_code == 422, 10,
                 "a bad ticker to be refused once the slot is free again")


def test_events_report_a_broken_store_and_keep_going(tmp_path: Path) -> None:
    def broken() -> DuckDBStore:
        raise OSError("store is on fire")

    with serving(create_app(broken, refresh_ms=200)) as base, httpx.stream("GET", f"{base}/api/events", timeout=10) as r:
        events = sse_events(r, time.monotonic() + 10)
        for _ in range(2):
            kind, data = next(events)
            assert kind == "error" and "store is on fire" in data["error"]


def test_page_static_files_and_headers(filled: Path) -> None:
    client = TestClient(create_app(lambda: DuckDBStore(filled, read_only=True), refresh_ms=750))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert 'data-refresh-ms="750"' in page.text and "/static/vendor/uPlot.iife.min.js" in page.text
    js = client.get("/static/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript") and "uPlot" in js.text[:200]
    assert client.get("/static/vendor/uPlot.min.css").headers["content-type"].startswith("text/css")
    assert "MIT License" in client.get("/static/vendor/uPlot-LICENSE.txt").text
    assert "EventSource" in client.get("/static/app.js").text
    for bad in ("../app.py", "vendor/../../app.py", ".hidden.js", "vendor/x/y.js", "app.py", "vendor/", "nope.js"):
        assert client.get(f"/static/{bad}").status_code == 404, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(alphabet="./\\%:abcjsvendorAPP-_~ \x00", max_size=40)
       | st.sampled_from(["%2e%2e/app.py", "vendor/%2e%2e/%2e%2e/app.py", "..%2fapp.py", "%2e%2e%2f%2e%2e%2fdemo.py"]))
def test_static_never_escapes_or_crashes(filled: Path, path: str) -> None:
    client = TestClient(create_app(lambda: DuckDBStore(filled, read_only=True)))
    r = client.get("/static/" + quote(path, safe="/%."))  # '%' raw: the server decodes %2e%2e and %2f itself
    assert r.status_code in (200, 404, 405), (path, r.status_code)
    if r.status_code == 200:  # only our own files
        assert r.headers["content-type"].split(";")[0] in ("text/javascript", "text/css", "text/plain")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ticker=st.text(max_size=30), window=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
       series=st.integers(-5, 50))
def test_hostile_query_strings_get_a_clear_answer(filled: Path, ticker: str, window: object, series: int) -> None:
    client = TestClient(create_app(lambda: DuckDBStore(filled, read_only=True), cache_s=0))
    r = client.get("/api/snapshot", params={"ticker": ticker, "window": str(window), "series": series})
    assert r.status_code in (200, 422), r.text[:300]
    if r.status_code == 200:
        s = r.json()
        assert s["ticker"] in (None, ticker.upper()) and len(s["series"]) <= series
