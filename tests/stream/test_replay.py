"""The replay source: JSONL and CSV, own or generated timestamps, pacing by speed, loops with fresh ids,
bad rows skipped, the packaged sample, dedupe by post id when producing."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from tickerpulse.data.formats import DataError
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.produce import run_source
from tickerpulse.stream.sources.replay import ReplaySource, sample_corpus


def test_jsonl_with_timestamps_keeps_gaps_and_paces(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    rows = [{"id": "a", "text": "$AAPL", "created_utc": 1000.0}, {"id": "b", "title": "T", "body": "B", "created_utc": 1002.0},
            {"id": "c", "text": "x", "created_utc": 1001.0, "subreddit": "stocks", "author": "u"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n\n" + json.dumps({"id": "d"}) + "\n")
    src = ReplaySource(f, speed=10)  # 2 s of post time in 0.2 s
    t0 = time.monotonic()
    posts = list(src.iter_posts())
    took = time.monotonic() - t0
    assert [p.id for p in posts] == ["a", "c", "b"]  # in time order
    assert 0.15 <= took < 2.0 and src.skipped == 2  # "d" has no text; "{broken" is not JSON: both warned, counted
    gaps = [(q.created_at - posts[0].created_at).total_seconds() for q in posts]
    assert gaps == pytest.approx([0, 1, 2]) and abs(posts[0].created_at.timestamp() - time.time()) < 5  # rebased
    assert posts[2].text == "T\n\nB" and posts[1].channel == "stocks" and posts[1].author == "u"
    raw = list(ReplaySource(f, speed=0, rebase=False).iter_posts())
    assert raw[0].created_at.timestamp() == 1000.0


def test_csv_generated_timestamps_loop_and_limit(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("id,text\n1,$TSLA up\n2,$TSLA down\n3,meh\n", encoding="utf-8")
    posts = list(itertools.islice(ReplaySource(f, speed=0, loop=True, limit=2).iter_posts(), 5))
    assert [p.id for p in posts] == ["1", "2", "1~1", "2~1", "1~2"]
    assert all(p.source == "replay" for p in posts)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no posts"):
        list(ReplaySource(empty).iter_posts())
    with pytest.raises(FileNotFoundError):
        list(ReplaySource(tmp_path / "nope.jsonl").iter_posts())


def test_packaged_sample_and_dedupe_when_producing(tmp_path: Path) -> None:
    posts = list(ReplaySource(sample_corpus(), speed=0).iter_posts())
    assert len(posts) == 48 and all(p.text for p in posts)
    bus = SqliteBus(tmp_path / "b.sqlite")
    stats = run_source(posts + posts[:10], bus, "t")  # a source that repeats itself
    assert (stats.produced, stats.duplicates) == (48, 10) and bus.count("t") == 48
    bus.close()
