"""kill -9 of the processor mid-stream, three times, then a restart: every post that has a ticker is in the
store exactly once (none lost, none duplicated). Real processes, real bus and store files, real tweets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import post_tickers
from tickerpulse.stream.produce import run_source
from tickerpulse.stream.sources.replay import ReplaySource
from tickerpulse.stream.store.duckdb import DuckDBStore

N_POSTS = 1200


def _processor(d: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "stream", "process", "--dir", str(d),
                             "--scorer", "vader", "--set", "max_records=16", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_9_three_times_then_restart_loses_and_duplicates_nothing(shared_data: Path, tmp_path: Path) -> None:
    cfg = StreamConfig(dir=tmp_path)
    src = ReplaySource(shared_data / "twitter-financial-news-sentiment" / "train.jsonl", speed=0, limit=N_POSTS)
    posts = list(src.iter_posts())
    expected = {(p.id, t) for p in posts for t in post_tickers(p.text, cfg.max_tickers_per_post, names=cfg.names)}
    with_ticker = {pid for pid, _ in expected}
    assert len(posts) == N_POSTS and len(with_ticker) > 150

    bus = SqliteBus(cfg.bus_path)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    run_source(posts, bus, cfg.topic)
    end = bus.end_offsets(cfg.topic)[0]

    kills, last = [], 0
    for _ in range(3):
        proc = _processor(tmp_path)
        deadline = time.monotonic() + 120
        # let it commit some progress, then kill it without warning
        while bus.committed(cfg.group, cfg.topic).get(0, 0) < last + 48:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "processor made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = bus.committed(cfg.group, cfg.topic).get(0, 0)
        kills.append(last)
    assert kills[-1] < end, "the stream finished before the third kill: make it longer"

    final = _processor(tmp_path, "--until-idle", "2")
    assert final.wait(180) == 0, final.stderr.read()
    assert bus.committed(cfg.group, cfg.topic)[0] == end
    bus.close()

    store = DuckDBStore(cfg.db, read_only=True)
    counts = store.counts()
    import duckdb

    con = duckdb.connect(str(cfg.db), read_only=True)
    rows = con.execute("SELECT post_id, ticker, COUNT(*) FROM docs GROUP BY post_id, ticker").fetchall()
    con.close()
    assert all(n == 1 for _, _, n in rows)                       # no (post, ticker) twice
    assert {(p, t) for p, t, _ in rows} == expected               # none lost, none invented
    assert counts["docs"] == len(expected)
    assert counts["posts"] == N_POSTS and counts["posts_with_ticker"] == len(with_ticker)
    assert counts["dead_letters"] == 0
