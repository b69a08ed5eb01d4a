"""The store interface: idempotent writes keyed by deterministic ids, and the few aggregates the dashboard
and the health view need. DuckDB (embedded) and Elasticsearch implement it with the same documents
(`tickerpulse.stream.schema`), so the dashboard runs unchanged on either.

Windows: aggregates look back `window_s` seconds from an anchor. The anchor is `now` when given, else the
newest document's `@timestamp` (so a replay of old posts still shows a populated dashboard, and a live
stream, whose newest post is seconds old, behaves like "the last N minutes").

Writes a store must treat as upserts (replays and retries send them again):
  - `upsert(docs)` by `doc_id`; `mark_posts(marks)` by `post_id`; `dead_letter(items)` by `dl_id`
    (a repeated dead letter keeps the max `attempts`); `heartbeat(name, metrics)` by name.

Optional: a store may offer `session()`, a context manager grouping operations (DuckDB: one connection
and one transaction for a micro-batch's writes or a dashboard refresh's reads). Callers use it when
present (`getattr(store, "session", None)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from tickerpulse.stream.schema import DeadLetter, PostMark, SentimentDoc

TopBy = Literal["mentions", "bullish", "bearish"]


@dataclass
class TickerStat:
    """Per-ticker aggregate over a window. `bull_bear_ratio` = positive / max(negative, 1)."""

    ticker: str
    asset_class: str
    mentions: int
    mean_score: float
    positive: int
    neutral: int
    negative: int
    mentions_per_min: float
    last_seen: str  # ISO-8601

    @property
    def bull_bear_ratio(self) -> float:
        return self.positive / max(self.negative, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bull_bear_ratio"] = round(self.bull_bear_ratio, 3)
        d["mean_score"] = round(self.mean_score, 4)
        d["mentions_per_min"] = round(self.mentions_per_min, 3)
        return d


@dataclass
class Point:
    """One time bucket of a ticker's series: bucket start (ISO-8601), mentions, mean score."""

    t: str
    mentions: int
    mean_score: float

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "mentions": self.mentions, "mean_score": round(self.mean_score, 4)}


@runtime_checkable
class Store(Protocol):
    """Where processors write and dashboards read. All writes are idempotent (see module docstring)."""

    def upsert(self, docs: Sequence[SentimentDoc]) -> int:
        """Insert or replace documents by `doc_id`; returns how many were written."""
        ...

    def mark_posts(self, marks: Sequence[PostMark]) -> None:
        """Record processed posts (with or without tickers) by `post_id`."""
        ...

    def dead_letter(self, items: Sequence[DeadLetter]) -> None:
        """Record items the pipeline gave up on (reason, truncated payload, attempts) by `dl_id`."""
        ...

    def heartbeat(self, name: str, metrics: Mapping[str, Any]) -> None:
        """Replace the latest health metrics of pipeline component `name` (JSON-able values)."""
        ...

    def counts(self) -> dict[str, int]:
        """{docs, posts, posts_with_ticker, posts_without_ticker, dead_letters, tickers}."""
        ...

    def ticker_stats(self, window_s: float = 3600, limit: int = 50, by: TopBy = "mentions",
                     now: datetime | None = None) -> list[TickerStat]:
        """Per-ticker aggregates over the window, top `limit` by mentions, or by mean score (bullish:
        mean > 0, highest first; bearish: mean < 0, lowest first; tickers with fewer than 2 mentions are
        ranked after the others). Use `top()` for the ranking so backends agree."""
        ...

    def timeseries(self, ticker: str, bucket_s: int = 60, window_s: float = 3600,
                   now: datetime | None = None) -> list[Point]:
        """Mentions and mean score of `ticker` per `bucket_s` bucket over the window, oldest first
        (empty buckets omitted)."""
        ...

    def latest(self, limit: int = 20, ticker: str | None = None) -> list[SentimentDoc]:
        """Newest documents by `processed_at` (optionally of one ticker)."""
        ...

    def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        """Newest dead letters."""
        ...

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Latest metrics per component name."""
        ...

    def latency_sample(self, limit: int = 5000) -> list[dict[str, float]]:
        """The newest documents' {lag_ms (processed - ingested), latency_ms} for client-side percentiles
        (Elasticsearch-compatible servers here have no percentiles aggregation)."""
        ...

    def close(self) -> None:
        ...


def top(stats: list[TickerStat], by: TopBy, limit: int) -> list[TickerStat]:
    """Shared ranking rule for `Store.ticker_stats` (so backends agree)."""
    if by == "mentions":
        key = lambda s: (-s.mentions, -s.mean_score, s.ticker)  # noqa: E731
    elif by == "bullish":
        stats = [s for s in stats if s.mean_score > 0]
        key = lambda s: (s.mentions < 2, -s.mean_score, -s.mentions, s.ticker)  # noqa: E731
    elif by == "bearish":
        stats = [s for s in stats if s.mean_score < 0]
        key = lambda s: (s.mentions < 2, s.mean_score, -s.mentions, s.ticker)  # noqa: E731
    else:
        raise ValueError(f"unknown ranking {by!r}: mentions, bullish or bearish")
    return sorted(stats, key=key)[:limit]


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles {p50: ..} (empty input -> {})."""
    if not values:
        return {}
    xs = sorted(values)
    out = {}
    for q in qs:
        i = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))
        out[f"p{q:g}"] = round(float(xs[i]), 3)
    return out
