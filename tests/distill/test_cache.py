"""SQLite cache: round trip, failures never cached, WAL mode, two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from collections import Counter

from tickerpulse.distill.cache import Cache, cache_key
from tickerpulse.distill.teacher import Outcome


def test_roundtrip_and_failed_not_cached(tmp_path):
    path = tmp_path / "c.sqlite"
    k1 = cache_key("http://h/v1/", "m", "p", "text", "AAPL")
    assert k1 == cache_key("http://h/v1", "m", "p", "text", "AAPL")  # trailing slash does not matter
    assert k1 != cache_key("http://h/v1", "m", "p", "text", None)
    assert k1 != cache_key("http://h/v1", "m2", "p", "text", "AAPL")
    ok = Outcome("ok", {"ticker": "AAPL", "sentiment": "positive", "score": 0.5, "reasoning": "r"}, attempts=2,
                 prompt_tokens=10, completion_tokens=5, response_format="json_schema", retries=Counter({"429": 1}))
    with Cache(path) as c:
        c.put(k1, "http://h/v1", "m", "p", "text", "AAPL", ok)
        c.put("k2", "http://h/v1", "m", "p", "t2", None, Outcome("rejected", reason="not JSON"))
        c.put("k3", "http://h/v1", "m", "p", "t3", None, Outcome("failed", reason="timed out"))
        assert c.count() == 2
    with Cache(path) as c:  # reopened: everything committed
        got = c.get_many([k1, "k2", "k3"])
    assert set(got) == {k1, "k2"}
    assert got[k1].answer == ok.answer and got[k1].retries == Counter({"429": 1}) and got[k1].attempts == 2
    assert got["k2"].status == "rejected" and got["k2"].reason == "not JSON"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, start: int) -> None:
    with Cache(path) as c:
        for i in range(start, start + 200):
            c.put(f"k{i}", "e", "m", "p", f"t{i}", None, Outcome("ok", {"ticker": None, "sentiment": "neutral",
                                                                       "score": 0.0, "reasoning": ""}))


def test_two_processes_write_concurrently(tmp_path):
    path = str(tmp_path / "c.sqlite")
    Cache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Cache(path) as c:
        assert c.count() == 400
