"""Helpers of the distributed-pipeline tests: a corpus, what the pipeline must store for it (computed
without the pipeline), producing and draining topics."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tickerpulse.stream.schema import Post, doc_id

VADER_VERSION = "vader-3.3.2"
T0 = datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)
# Records that are not posts: each must become one dead letter with its code, and never stop the stream.
BAD_RECORDS = {
    "bad-json": (b'{"id": "x", "text": ', "bad_json"),
    "bad-utf8": (b'{"id": "y", "text": "\xff\xfe caf\xe9"}', "not_utf8"),
    "bad-shape": (b"[1, 2, 3]", "not_object"),
    "bad-big": (json.dumps({"id": "z", "source": "t", "text": "$AAPL " * 40_000, "created_at": 0}).encode(), "too_large"),
}


def unique(prefix: str) -> str:
    """A fresh topic / index / group name (the servers are shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def corpus(n: int, prefix: str = "p") -> list[Post]:
    """`n` posts from the packaged sample corpus (cycled; unique ids; event times 7 s apart)."""
    from tickerpulse.stream.sources.replay import read_rows, sample_corpus

    rows = [r for _, r in read_rows(sample_corpus())]
    return [Post(id=f"{prefix}{i:05d}", source="replay", text=rows[i % len(rows)]["text"], channel="test",
                 created_at=T0 + timedelta(seconds=7 * i)) for i in range(n)]


def expected_docs(posts: list[Post], max_tickers: int = 8) -> dict[str, tuple[str, float]]:
    """doc_id -> (ticker, VADER score) the pipeline must store for `posts` (tickers by the stream's default
    rule: company names count), computed without it."""
    from tickerpulse.stream.processor import post_tickers
    from tickerpulse.stream.scoring import VaderScorer

    vader = VaderScorer()
    out = {}
    for p in posts:
        for t in post_tickers(p.text, max_tickers, names=True):
            (ans,) = vader.score([(p.text, t)])
            out[doc_id(p.id, t, VADER_VERSION)] = (t, float(ans["score"]))
    return out


def expected_stats(expected: dict[str, tuple[str, float]]) -> dict[str, tuple[int, float]]:
    """ticker -> (mentions, mean score)."""
    by: dict[str, list[float]] = defaultdict(list)
    for t, s in expected.values():
        by[t].append(s)
    return {t: (len(v), sum(v) / len(v)) for t, v in by.items()}


def produce(bus: Any, topic: str, posts: list[Post], bad: bool = True) -> None:
    """Posts keyed by id, plus (optionally) the malformed records, flushed."""
    for p in posts:
        bus.produce(topic, p.id, p.to_bytes())
    if bad:
        for key, (value, _) in BAD_RECORDS.items():
            bus.produce(topic, key, value)
    assert bus.flush(30) == 0


def drain(bus: Any, topic: str, timeout: float = 30.0, idle: float = 3.0) -> list[Any]:
    """Every record of `topic`, read by a fresh consumer group until `idle` seconds bring nothing."""
    import time

    c = bus.consumer(unique("drain"), [topic])
    out: list[Any] = []
    try:
        deadline, last = time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline and (not out or time.monotonic() - last < idle):
            got = c.poll(500, 0.5)
            if got:
                out += got
                last = time.monotonic()
            elif out and time.monotonic() - last >= idle:
                break
    finally:
        c.close()
    return out


def write_jsonl(path: Path, posts: list[Post]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for p in posts:
            fh.write(json.dumps({"id": p.id, "text": p.text, "created_at": p.created_at.isoformat(),
                                 "channel": p.channel}) + "\n")
    return path
