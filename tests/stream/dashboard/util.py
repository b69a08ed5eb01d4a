"""Helpers for the dashboard tests: documents to write, a real uvicorn server in a thread, an SSE reader."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, free_port
from tickerpulse.stream.schema import Post, SentimentDoc

TICKERS = ["AAPL", "TSLA", "NVDA", "BTC", "MSFT", "AMZN"]


def make_docs(n: int, start: int = 0, t0: datetime | None = None, gap_s: float = 20.0) -> list[SentimentDoc]:
    """`n` scored documents, tickers cycling through TICKERS, labels cycling positive/negative/neutral."""
    t0 = t0 or datetime.now(timezone.utc) - timedelta(minutes=30)
    out = []
    for i in range(start, start + n):
        ticker, label = TICKERS[i % len(TICKERS)], ("positive", "negative", "neutral")[i % 3]
        post = Post(id=f"p{i}", source="replay", text=f"post {i} about ${ticker}", created_at=t0 + timedelta(seconds=i * gap_s))
        out.append(SentimentDoc.build(post, {"sentiment": label, "score": {"positive": 0.7, "negative": -0.6, "neutral": 0.0}[label],
                                             "reasoning": "r"}, ticker=ticker, asset_class="crypto" if ticker == "BTC" else "equity",
                                      model_version="v", ingested_at=post.created_at, latency_ms=5,
                                      processed_at=post.created_at + timedelta(seconds=1)))
    return out


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run `app` on a free 127.0.0.1 port with uvicorn in a thread; yields its base URL; stops it."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                          timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "the dashboard did not stop"


def sse_events(response: httpx.Response, deadline: float) -> Iterator[tuple[str, Any]]:
    """(event, parsed data) pairs from an open text/event-stream response until `deadline` (monotonic)."""
    event, data = "message", []
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            return
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def write_in_another_process(db: Path, n: int, start: int) -> None:
    """Upsert `make_docs(n, start)` into the DuckDB file from a separate process, as the processor does
    (one process may not hold the same file read-only and read-write at once)."""
    code = ("import sys; from tests.stream.dashboard.util import make_docs; "
            "from tickerpulse.stream.store.duckdb import DuckDBStore; "
            f"s = DuckDBStore(sys.argv[1]); s.upsert(make_docs({int(n)}, start={int(start)})); s.close()")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=120, cwd=ROOT)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
