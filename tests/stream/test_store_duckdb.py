"""The DuckDB store: idempotent upserts, aggregates, dead letters, and two processes on one file."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tickerpulse.stream.schema import DeadLetter, Post, PostMark, SentimentDoc
from tickerpulse.stream.store.base import Store, percentiles
from tickerpulse.stream.store.duckdb import DuckDBStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def doc(pid: str, ticker: str, label: str, score: float, minute: float, version: str = "v") -> SentimentDoc:
    post = Post(id=pid, source="replay", text=f"post {pid} about ${ticker}", created_at=T0 + timedelta(minutes=minute))
    return SentimentDoc.build(post, {"sentiment": label, "score": score, "reasoning": "r"}, ticker=ticker,
                              asset_class="crypto" if ticker == "BTC" else "equity", model_version=version,
                              ingested_at=post.created_at + timedelta(seconds=1), latency_ms=5,
                              processed_at=post.created_at + timedelta(seconds=3))


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    s = DuckDBStore(tmp_path / "s.duckdb", persistent=True)
    s.upsert([
        doc("1", "AAPL", "positive", 0.8, 0), doc("2", "AAPL", "positive", 0.6, 1), doc("3", "AAPL", "negative", -0.4, 2),
        doc("4", "TSLA", "negative", -0.9, 3), doc("5", "TSLA", "negative", -0.5, 50), doc("6", "BTC", "neutral", 0.1, 59),
    ])
    yield s
    s.close()


def test_upsert_is_idempotent(store: DuckDBStore) -> None:
    assert isinstance(store, Store)
    store.upsert([doc("1", "AAPL", "negative", -0.2, 0), doc("1", "AAPL", "positive", 0.8, 0, version="v2")])
    assert store.counts()["docs"] == 7 and len(set(store.doc_ids())) == 7
    assert [d.score for d in store.latest(50, "AAPL") if d.post_id == "1" and d.model_version == "v"] == [-0.2]


def test_ticker_stats_windows_and_rankings(store: DuckDBStore) -> None:
    stats = {s.ticker: s for s in store.ticker_stats(window_s=3600)}
    a = stats["AAPL"]
    assert (a.mentions, a.positive, a.negative) == (3, 2, 1) and a.mean_score == pytest.approx(1.0 / 3)
    assert a.bull_bear_ratio == 2.0 and stats["BTC"].asset_class == "crypto"
    # the anchor is the newest post (minute 59): a 10-minute window sees only minutes > 49
    recent = {s.ticker: s.mentions for s in store.ticker_stats(window_s=600)}
    assert recent == {"TSLA": 1, "BTC": 1}
    assert [s.ticker for s in store.ticker_stats(3600, by="mentions")][:2] == ["AAPL", "TSLA"]
    assert [s.ticker for s in store.ticker_stats(3600, by="bullish")] == ["AAPL", "BTC"]
    assert [s.ticker for s in store.ticker_stats(3600, by="bearish")] == ["TSLA"]
    assert stats["AAPL"].mentions_per_min == pytest.approx(3 / 59)


def test_timeseries_latest_and_latency(store: DuckDBStore) -> None:
    pts = store.timeseries("AAPL", bucket_s=120, window_s=3600)
    assert [(p.t, p.mentions) for p in pts] == [("2024-05-01T12:00:00Z", 2), ("2024-05-01T12:02:00Z", 1)]
    assert pts[0].mean_score == pytest.approx(0.7)
    assert [d.post_id for d in store.latest(2)] == ["6", "5"]
    lat = store.latency_sample()
    assert len(lat) == 6 and all(x["lag_ms"] == 2000 and x["latency_ms"] == 5 for x in lat)
    assert percentiles([1, 2, 3, 4, 100], (50, 95)) == {"p50": 3.0, "p95": 100.0}


def test_posts_dead_letters_heartbeats(store: DuckDBStore) -> None:
    store.mark_posts([PostMark(post_id=p, source="r", created_at=T0, ingested_at=T0, processed_at=T0, n_tickers=n)
                      for p, n in (("1", 1), ("2", 0), ("2", 0), ("3", 2))])
    dl = DeadLetter.build(b"{bad", stage="parse", code="bad_json", reason="oops", topic="t", partition=0, offset=3)
    store.dead_letter([dl])
    store.dead_letter([dl.model_copy(update={"attempts": 3})])
    store.dead_letter([dl.model_copy(update={"attempts": 2})])
    store.heartbeat("processor", {"posts_per_s": 3.5, "status": "running"})
    c = store.counts()
    assert (c["posts"], c["posts_with_ticker"], c["posts_without_ticker"], c["dead_letters"], c["tickers"]) == (3, 2, 1, 1, 3)
    assert store.dead_letters()[0].attempts == 3 and store.dead_letters()[0].reason == "oops"
    assert store.heartbeats()["processor"]["posts_per_s"] == 3.5


def test_reader_and_writer_processes_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    ro = DuckDBStore(path, read_only=True)
    assert ro.counts()["docs"] == 0 and ro.latest() == []  # no file yet: empty, not an error
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time
from tests.stream.test_store_duckdb import doc
from tickerpulse.stream.store.duckdb import DuckDBStore
s = DuckDBStore({str(path)!r})
for i in range(15):
    with s.session():
        s.upsert([doc(f"p{{i}}-{{k}}", "AAPL", "positive", 0.5, i) for k in range(20)])
    time.sleep(0.02)
"""], cwd=Path(__file__).resolve().parents[2])
    seen = 0
    while writer.poll() is None:
        if path.exists():
            seen = max(seen, ro.counts()["docs"])  # must never fail on the writer's lock
    assert writer.wait() == 0
    assert ro.counts()["docs"] == 300 and seen <= 300
