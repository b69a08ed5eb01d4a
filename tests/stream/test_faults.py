"""Scorer faults pause the stream, never lose posts (issue #26).

Fast part (default suite): property tests of the retry logic over the real VADER scorer behind a backend
that fails on a drawn schedule, and the Spark path's UDF against a real server process that fails.

Fault suite (integration: real processes, ~2 min on the shared 2 cores): a real HTTP scorer server process
(`tests/stream/scorer_server.py`, the /v1/sentiment protocol, VADER) and the real processor
(`tickerpulse stream process` on the SQLite bus + DuckDB store) as a subprocess:
  1. the server is down when the processor starts, then SIGSTOPped mid-stream; the processor is SIGKILLed
     while paused, the server SIGCONTed, the processor restarted until idle;
  2. 429 (Retry-After) and 500 bursts, the processor SIGKILLed mid-burst twice, restarted;
  3. 401 (wrong, missing, then rotated key): exit code 78, clear message, nothing committed or
     dead-lettered; `stream run` does not restart-loop; with the right key a rerun stores everything.
Each asserts 0 lost (every good (post, ticker) stored), 0 duplicated (doc ids unique, count == expected)
and 0 dead letters for good posts (only the planted poison items are dead-lettered), and prints its
figures (`fault-suite: ...`, shown with `pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import free_port
from tests.stream.scorer_server import ScorerServer
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import post_tickers, process_records, score_with_retry
from tickerpulse.stream.schema import Post
from tickerpulse.stream.scoring import (RETRY_AFTER_CAP_S, ItemRejected, ScorerFatal, ScorerUnavailable,
                                        ScoringInterrupted, VaderScorer, validate_answers)

KEY = "sk-fault-suite-3c1e77"
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM", "BAC", "XOM", "BTC", "ETH"]
PHRASES = ["smashes earnings, great quarter", "recall is terrible news", "flat ahead of the report",
           "upgraded to buy, strong outlook", "misses on revenue, ugly guidance", "announces a dividend"]


# -- fast: the retry logic under drawn fault schedules ------------------------------------------------

_VADER: list[VaderScorer] = []


def _vader() -> VaderScorer:
    if not _VADER:
        _VADER.append(VaderScorer())
    return _VADER[0]


class Scripted:
    """Real VADER behind a backend that follows a script: each call pops the next outcome
    ('ok', ('down', retry_after) or 'fatal'); items whose text has POISON400 are rejected (HTTP 400's
    class), BADANSWER ones get an answer outside the schema."""

    name, model_version = "scripted-vader", "vader-3.3.2"

    def __init__(self, script: Sequence[Any]) -> None:
        self.inner, self.script, self.calls, self.downs = _vader(), list(script), 0, 0
        self.last: Any = None

    def score(self, items: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
        self.calls += 1
        step = self.last = self.script.pop(0) if self.script else "ok"
        if step == "fatal":
            raise ScorerFatal("answered 401")
        if step != "ok":
            self.downs += 1
            raise ScorerUnavailable("answered 503", retry_after=step[1])
        if any("POISON400" in t for t, _ in items):
            raise ItemRejected("answered 400")
        out = self.inner.score(items)
        for (t, _), a in zip(items, out):
            if "BADANSWER" in t:
                a["score"] = 7.0
        return validate_answers(items, out)

    def close(self) -> None:
        pass


ITEM_TEXTS = st.lists(st.sampled_from(["good", "POISON400", "BADANSWER"]), min_size=1, max_size=12)
OUTAGES = st.lists(st.one_of(st.just("ok"), st.tuples(st.just("down"), st.none() | st.floats(0, 5000))), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=ITEM_TEXTS, script=OUTAGES)
def test_outages_never_dead_letter_good_items(kinds: list[str], script: list[Any]) -> None:
    items = [(f"$AAPL {k} number {i}", "AAPL") for i, k in enumerate(kinds)]
    scorer = Scripted(script)
    waits: list[float] = []
    bad: list[tuple[Any, float]] = []

    def sleep(wait: float) -> None:  # each wait follows the call that failed: check it against that call
        ok = wait <= RETRY_AFTER_CAP_S
        if scorer.last not in ("ok", None):  # a pause: never shorter than Retry-After (capped), else <= max
            ra = scorer.last[1]
            ok = ok and (wait >= min(ra, RETRY_AFTER_CAP_S) if ra is not None else wait <= 0.5)
        if not ok:
            bad.append((scorer.last, wait))
        waits.append(wait)

    answers, failures, _ = score_with_retry(scorer, items, max_attempts=2, backoff_s=0.01, max_backoff_s=0.5,
                                            sleep=sleep)
    assert bad == []
    assert {i for i, _, _ in failures} == {i for i, k in enumerate(kinds) if k != "good"}
    assert all((a is None) == (k != "good") for a, k in zip(answers, kinds))
    assert all(a["ticker"] == "AAPL" for a in answers if a)
    assert len(waits) >= scorer.downs  # every outage met was waited out


@settings(max_examples=100, deadline=None)
@given(kinds=ITEM_TEXTS, before=OUTAGES, during=OUTAGES)
def test_a_refusal_propagates_even_while_isolating_items(kinds: list[str], before: list[Any],
                                                          during: list[Any]) -> None:
    kinds = ["POISON400", *kinds]  # the first "ok" call is rejected, so the next calls isolate items
    downs = [x for x in before if x != "ok"]
    script = [*downs, "ok", *[x for x in during if x != "ok"], "fatal"]
    items = [(f"$AAPL {k} {i}", "AAPL") for i, k in enumerate(kinds)]
    with pytest.raises(ScorerFatal):
        score_with_retry(Scripted(script), items, max_attempts=2, backoff_s=0.0, sleep=lambda s: None)


def test_a_long_outage_fails_the_batch_and_a_stop_interrupts_it(tmp_path: Path) -> None:
    cfg = StreamConfig(dir=tmp_path, scorer="vader", backoff_s=0.01, max_backoff_s=0.05)
    from tickerpulse.stream.bus.base import Record

    rec = Record(cfg.topic, 0, 0, None, Post(id="p", source="t", text="$AAPL up", created_at=time.time()).to_bytes(),
                 time.time())
    with pytest.raises(ScorerUnavailable):  # what the Spark path relies on: the batch fails, nothing written
        process_records([rec], Scripted([("down", None)] * 50), cfg, sleep=lambda s: None, max_pause_s=0.2)
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(ScoringInterrupted):
        process_records([rec], Scripted([("down", 1.0)]), cfg, stop=stop)


def test_spark_udf_fails_the_batch_on_a_scorer_fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from tickerpulse.stream.spark import pipeline

    server = ScorerServer(free_port(), key=KEY)
    monkeypatch.setenv("TICKERPULSE_API_KEY", KEY)
    monkeypatch.setattr(pipeline, "MAX_PAUSE_S", 0.5)
    try:
        conf = StreamConfig(dir=tmp_path, scorer="http", url=server.url, backoff_s=0.05, max_backoff_s=0.1,
                            max_attempts=1).model_dump(mode="json")
        text = pd.Series(["$AAPL great quarter", "$TSLA POISON400", None])
        ticker = pd.Series(["AAPL", "TSLA", None])
        out = pipeline.score_series(conf, text, ticker)  # an item fault: that row only
        assert out["sentiment"][0] == "positive" and "400" in out["error"][1] and out["error"][2] is None
        server.control((500, 100, None))
        with pytest.raises(ScorerUnavailable, match="500"):
            pipeline.score_series(conf, text, ticker)
        server.stop()
        server = ScorerServer(server.port, key="rotated-key")
        with pytest.raises(ScorerFatal, match="401"):
            pipeline.score_series(conf, text, ticker)
    finally:
        server.stop()
        pipeline._CACHE.clear()


# -- the fault suite: real processes ---------------------------------------------------------------

def _posts(n: int) -> list[Post]:
    """n posts with one or two tickers; every 37th is an item the server rejects (400), every 41st one it
    answers outside the schema: those two kinds must be dead-lettered, nothing else."""
    now = time.time()
    out = []
    for i in range(n):
        a, b = SYMBOLS[i % len(SYMBOLS)], SYMBOLS[(i * 5 + 3) % len(SYMBOLS)]
        text = f"${a} {PHRASES[i % len(PHRASES)]} (note {i})"
        if i % 3 == 0 and a != b:
            text += f", ${b} too"
        if i % 37 == 5:
            text = f"${a} POISON400 note {i}"
        elif i % 41 == 7:
            text = f"${a} BADANSWER note {i}"
        out.append(Post(id=f"f{i}", source="fault-suite", text=text, created_at=now - n + i))
    return out


class Stream:
    """The bus + store folder of one scenario, the expected results, and helpers to watch it."""

    def __init__(self, d: Path, n: int) -> None:
        self.dir, self.cfg = d, StreamConfig(dir=d)
        self.posts = _posts(n)
        items = {(p.id, t) for p in self.posts
                 for t in post_tickers(p.text, self.cfg.max_tickers_per_post, names=self.cfg.names)}
        self.poison = {(p.id, t) for p, t in ((p, t) for p in self.posts
                                              for t in post_tickers(p.text, 100, names=self.cfg.names))
                       if "POISON400" in p.text or "BADANSWER" in p.text}
        self.good = items - self.poison
        assert len(self.good) > n and len(self.poison) >= 2
        self.bus = SqliteBus(self.cfg.bus_path)
        self.bus.ensure_topics([self.cfg.topic, self.cfg.dead_letter_topic])
        for p in self.posts:
            self.bus.produce(self.cfg.topic, p.id, p.to_bytes())
        self.bus.flush()
        self.end = self.bus.end_offsets(self.cfg.topic)[0]
        self.kills = 0
        self.logs: list[Path] = []

    def committed(self) -> int:
        return self.bus.committed(self.cfg.group, self.cfg.topic).get(0, 0)

    def process(self, url: str, key: str | None, until_idle: float | None = None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
        if key:
            env["TICKERPULSE_API_KEY"] = key
        argv = [sys.executable, "-m", "tickerpulse.cli.main", "stream", "process", "--dir", str(self.dir),
                "--scorer", "http", "--url", url, "--set", "max_records=16", "--set", "score_batch=8",
                "--set", "concurrency=1", "--set", "scorer_timeout=1", "--set", "backoff_s=0.05",
                "--set", "max_backoff_s=0.5", "--set", "poll_timeout=0.2"]
        if until_idle is not None:
            argv += ["--until-idle", str(until_idle)]
        log = self.dir / f"processor-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as fh:
            return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=fh)

    def kill(self, proc: subprocess.Popen) -> None:
        assert proc.poll() is None, self.logs[-1].read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1

    def store(self) -> dict[str, Any]:
        """What is in the store now (read with the store's own read-only open, which waits out the
        processor's lock)."""
        from tickerpulse.stream.store.duckdb import DuckDBStore

        st = DuckDBStore(self.cfg.db, read_only=True)
        try:
            return {"beat": st.heartbeats().get("processor") or {}, "counts": st.counts(),
                    "dead": [(d.post_id, d.ticker) for d in st.dead_letters(10_000)]}
        finally:
            st.close()

    def finish(self, url: str, key: str | None, name: str) -> dict[str, Any]:
        """Restart the processor until idle, then check: nothing lost, nothing twice, only poison dead."""
        final = self.process(url, key, until_idle=2)
        assert final.wait(180) == 0, self.logs[-1].read_text()
        assert self.committed() == self.end
        import duckdb

        con = duckdb.connect(str(self.cfg.db), read_only=True)
        rows = con.execute("SELECT doc_id, post_id, ticker FROM docs").fetchall()
        dead = con.execute("SELECT post_id, ticker FROM dead_letters").fetchall()
        con.close()
        stored = {(p, t) for _, p, t in rows}
        figures = {"scenario": name, "posts": len(self.posts), "items": len(self.good) + len(self.poison),
                   "kills": self.kills, "docs": len(rows), "lost": len(self.good - stored),
                   "dup": len(rows) - len({d for d, _, _ in rows}) + len(rows) - len(stored),
                   "dead_good": len({(p, t) for p, t in dead} & self.good), "dead_poison": len(dead)}
        print("fault-suite:", json.dumps(figures))
        assert figures["lost"] == 0 and figures["dup"] == 0 and figures["dead_good"] == 0
        assert stored == self.good and len(rows) == len(self.good)
        assert {(p, t) for p, t in dead} == self.poison and len(dead) == len(self.poison)
        self.bus.close()
        return figures


def wait_for(ok: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"processor exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text() if log else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.mark.integration
def test_scorer_down_then_sigstopped_while_the_processor_is_killed(tmp_path: Path) -> None:
    s = Stream(tmp_path, 500)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = s.process(url, None)  # before the server exists: it must wait, not guess a model version
    wait_for(lambda: s.store()["beat"].get("status") == "waiting", 60, "status waiting", proc, s.logs[-1],
             every=0.3)
    assert s.committed() == 0
    server = ScorerServer(port, delay=0.05)
    try:
        wait_for(lambda: s.committed() >= 48, 60, "progress", proc, s.logs[-1])
        os.kill(server.proc.pid, signal.SIGSTOP)
        wait_for(lambda: s.store()["beat"].get("status") == "paused", 30, "status paused", proc, s.logs[-1],
                 every=0.3)
        held, before = s.committed(), s.store()
        assert held < s.end, "the stream finished before the server was stopped: make it longer"
        time.sleep(2.0)  # paused: nothing committed, nothing dead-lettered meanwhile
        after = s.store()
        assert s.committed() == held and after["counts"]["dead_letters"] == before["counts"]["dead_letters"]
        assert "timed out" in after["beat"]["reason"]
        status = subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", "stream", "status", "--dir", str(s.dir)],
                                capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
        assert "processor: paused" in status.stdout and "timed out" in status.stdout, status.stdout + status.stderr
        s.kill(proc)
        os.kill(server.proc.pid, signal.SIGCONT)
        figures = s.finish(url, None, "sigstop")
    finally:
        server.stop()
    assert figures["kills"] == 1
    import duckdb

    con = duckdb.connect(str(s.cfg.db), read_only=True)
    versions = {v for (v,) in con.execute("SELECT DISTINCT model_version FROM docs").fetchall()}
    con.close()
    assert versions == {"vader-fault-server:sentiment-v3:fast"}


@pytest.mark.integration
def test_429_and_500_bursts_with_kills_mid_burst(tmp_path: Path) -> None:
    s = Stream(tmp_path, 700)
    server = ScorerServer(free_port(), delay=0.03)
    try:
        proc = s.process(server.url, None)
        wait_for(lambda: s.committed() >= 32, 60, "progress", proc, s.logs[-1])
        server.control((429, 2, 1))
        c0 = s.committed()
        wait_for(lambda: s.committed() > c0 + 16, 60, "progress after the 429 burst", proc, s.logs[-1])
        assert server.stats()["faults_sent"].get("429") == 2
        assert s.committed() < s.end, "the stream finished too early: make it longer"
        server.control((500, 12, None))
        wait_for(lambda: server.stats()["faults_sent"].get("500", 0) >= 3, 60, "the 500 burst", proc, s.logs[-1])
        assert server.stats()["pending_faults"] > 0
        s.kill(proc)  # mid-burst
        proc = s.process(server.url, None)  # meets the rest of the burst at its start
        c1 = s.committed()
        wait_for(lambda: s.committed() > c1 + 16, 90, "progress after the restart", proc, s.logs[-1])
        assert server.stats()["pending_faults"] == 0
        assert s.committed() < s.end, "the stream finished too early: make it longer"
        server.control((429, 3, 1), (503, 2, None))
        wait_for(lambda: server.stats()["faults_sent"].get("429", 0) >= 4, 60, "the second 429 burst", proc,
                 s.logs[-1])
        s.kill(proc)  # mid-burst again
        time.sleep(1.0)  # the Retry-After the killed processor was honouring: a new process cannot know it
        figures = s.finish(server.url, None, "429+500 bursts")
        stats = server.stats()
    finally:
        server.stop()
    assert stats["faults_sent"] == {"429": 5, "500": 12, "503": 2} and stats["pending_faults"] == 0
    assert stats["early_after_429"] == 0  # Retry-After honoured every time
    assert figures["kills"] == 2


@pytest.mark.integration
def test_401_stops_with_nothing_committed_then_the_right_key_stores_everything(tmp_path: Path) -> None:
    s = Stream(tmp_path / "s", 300)
    server = ScorerServer(free_port(), key=KEY)
    try:
        for key in ("sk-wrong-0000", None):
            proc = s.process(server.url, key, until_idle=2)
            assert proc.wait(60) == 78
            err = s.logs[-1].read_text()
            assert "401" in err and "TICKERPULSE_API_KEY" in err and "Traceback" not in err
            assert "sk-wrong-0000" not in err and KEY not in err
            st = s.store()
            assert s.committed() == 0 and st["counts"]["docs"] == 0 and st["counts"]["dead_letters"] == 0
            assert st["beat"]["status"] == "failed" and "401" in st["beat"]["reason"]

        # `stream run` does not restart-loop on it: one refused processor, then the pipeline stops
        before = server.stats()["unauthorized"]
        posts = tmp_path / "posts.jsonl"
        posts.write_text("".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in s.posts[:20]))
        env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
        run = subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", "stream", "run", "--file", str(posts),
                              "--speed", "0", "--dir", str(tmp_path / "run"), "--scorer", "http", "--url", server.url,
                              "--no-dashboard", "--exit-when-done"],
                             env={**env, "TICKERPULSE_API_KEY": "sk-wrong-0000"}, capture_output=True, text=True,
                             timeout=120)
        out = " ".join(run.stdout.split())  # rich wraps long lines
        assert run.returncode == 1, run.stdout + run.stderr
        assert "code 78" in out and "not restarting" in out and "restarting (1/" not in out
        assert server.stats()["unauthorized"] - before == 1

        # the right key; then the server's key is rotated mid-stream: 401 again, the batch in hand uncommitted
        proc = s.process(server.url, KEY)
        wait_for(lambda: s.committed() >= 48, 60, "progress", proc, s.logs[-1])
        server.stop()
        server = ScorerServer(server.port, key="sk-rotated-1111", delay=0.0)
        assert proc.wait(60) == 78, s.logs[-1].read_text()
        assert s.committed() < s.end and set(s.store()["dead"]) <= s.poison  # no good post dead-lettered
        figures = s.finish(server.url, "sk-rotated-1111", "401")
    finally:
        server.stop()
    assert figures["lost"] == 0


def test_spark_job_error_names_the_workers_exception() -> None:
    from tickerpulse.stream.spark.job import _root_cause

    desc = ("[FOREACH_BATCH_USER_FUNCTION_ERROR] Reason: An exception was raised by the Python Proxy. Return Message: "
            "Traceback (most recent call last):\n  File \"pipeline.py\", line 143, in score_series\n    raise\n"
            "tickerpulse.stream.scoring.ScorerUnavailable: /v1/sentiment answered 503: {\"error\": {}}\n\n"
            "\n=== Streaming Query ===\nIdentifier: tickerpulse_processor [id = 1]\nThread State: RUNNABLE\n"
            "\tat py4j.Protocol.getReturnValue(Protocol.java:476)\n\t... 34 more")
    assert _root_cause(desc) == 'tickerpulse.stream.scoring.ScorerUnavailable: /v1/sentiment answered 503: {"error": {}}'
    assert _root_cause("no traceback here") == ""


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.text(max_size=60), st.from_regex(r"\s*-?\d{1,15}(\.\d{0,6})?\s*", fullmatch=True)))
def test_any_retry_after_header_is_bounded_or_ignored(value: str | None) -> None:
    from tickerpulse.stream.scoring import parse_retry_after

    secs = parse_retry_after(value, now=1_700_000_000.0)
    assert secs is None or 0.0 <= secs <= RETRY_AFTER_CAP_S


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)
ANSWERISH = st.fixed_dictionaries({}, optional={"sentiment": st.sampled_from(["positive", "negative", "neutral", "bullish"]) | JSON,
                                                "score": st.floats(allow_nan=True) | JSON, "reasoning": JSON,
                                                "ticker": JSON})


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(JSON, st.lists(ANSWERISH | JSON, max_size=4)), n=st.integers(1, 3))
def test_any_server_answer_is_validated_or_an_item_fault(body: Any, n: int) -> None:
    """Whatever a (broken or hostile) server returns as `results`: valid answers for every item, or a
    ScoringError (an item fault: the items are then scored alone), never another exception."""
    from tickerpulse.task.contract import SentimentAnswer
    from tickerpulse.stream.scoring import ScoringError

    items = [(f"$AAPL note {i}", "AAPL") for i in range(n)]
    try:
        out = validate_answers(items, body)
    except ScoringError:
        return
    assert len(out) == n and all(SentimentAnswer.model_validate(a).ticker == "AAPL" for a in out)
