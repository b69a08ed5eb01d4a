"""The http scorer against real server processes: each HTTP answer lands in the right fault class (scorer
fault: pause or stop; item fault: isolate and dead-letter), the API key is sent and never shown, a server
that is down at start makes the processor wait instead of guessing the model version, and (slow) the real
`tickerpulse serve`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.stream.scorer_server import ScorerServer
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import run_processor
from tickerpulse.stream.schema import Post
from tickerpulse.stream.scoring import (HttpScorer, ItemRejected, ScorerFatal, ScorerUnavailable, ScoringError,
                                        check_status, parse_retry_after)
from tickerpulse.stream.store.duckdb import DuckDBStore

POSTS = ["$AAPL smashes earnings", "no ticker in this one", "$TSLA recall is terrible news"]
KEY = "sk-test-5f3a9c-never-printed"


def _fill(cfg: StreamConfig) -> SqliteBus:
    bus = SqliteBus(cfg.bus_path)
    for i, text in enumerate(POSTS):
        bus.produce(cfg.topic, None, Post(id=f"h{i}", source="test", text=text, created_at=time.time()).to_bytes())
    bus.flush()
    return bus


@pytest.fixture(scope="module")
def keyed() -> Iterator[ScorerServer]:
    server = ScorerServer(free_port(), key=KEY)
    yield server
    server.stop()


def test_answers_are_classified_scorer_fault_or_item_fault(keyed: ScorerServer) -> None:
    sc = HttpScorer(keyed.url, api_key=KEY, concurrency=1, timeout=5)
    try:
        assert sc.ready() == "vader-fault-server:sentiment-v3:fast"
        (ok,) = sc.score([("$AAPL great quarter", "AAPL")])
        assert ok["ticker"] == "AAPL" and ok["sentiment"] == "positive"
        keyed.control((429, 1, 3), (500, 1, None), (503, 1, None))
        with pytest.raises(ScorerUnavailable, match="429") as e429:
            sc.score([("$AAPL up", "AAPL")])
        assert e429.value.retry_after == 3.0
        for code in ("500", "503"):
            with pytest.raises(ScorerUnavailable, match=code) as e5:
                sc.score([("$AAPL up", "AAPL")])
            assert e5.value.retry_after is None
        with pytest.raises(ItemRejected, match="400"):  # the server rejects this text: an item fault
            sc.score([("$AAPL POISON400", "AAPL")])
        with pytest.raises(ScoringError, match="answer 0 invalid"):  # an answer outside the schema
            sc.score([("$AAPL BADANSWER", "AAPL")])
    finally:
        sc.close()


def test_a_wrong_or_missing_key_is_fatal_and_never_shown(keyed: ScorerServer) -> None:
    for key in ("sk-wrong-key-77ab", None):
        sc = HttpScorer(keyed.url, api_key=key, api_key_env="MY_KEY_VAR", timeout=5)
        with pytest.raises(ScorerFatal) as exc:
            sc.ready()
        assert "401" in str(exc.value) and "$MY_KEY_VAR" in str(exc.value)
        assert (key or KEY) not in str(exc.value) and KEY not in repr(exc.value)
        sc.close()


def test_timeouts_and_refused_connections_are_scorer_faults(tmp_path: Path) -> None:
    slow = ScorerServer(free_port(), delay=2.0)
    try:
        sc = HttpScorer(slow.url, timeout=0.5)
        sc.ready()
        with pytest.raises(ScorerUnavailable, match="timed out"):
            sc.score([("$AAPL up", "AAPL")])
        sc.close()
    finally:
        slow.stop()
    sc = HttpScorer(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(ScorerUnavailable, match="ConnectError"):
        sc.ready(max_wait_s=0)
    assert sc.model_version is None  # never guessed
    sc.close()


@pytest.mark.parametrize(("status", "kind"), [(401, ScorerFatal), (403, ScorerFatal), (404, ScorerFatal),
                                              (408, ScorerUnavailable), (429, ScorerUnavailable),
                                              (500, ScorerUnavailable), (502, ScorerUnavailable),
                                              (504, ScorerUnavailable), (400, ItemRejected), (413, ItemRejected),
                                              (422, ItemRejected)])
def test_status_table(status: int, kind: type[Exception]) -> None:
    with pytest.raises(kind):
        check_status(status, f"answered {status}")
    check_status(200, "ok")


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0 and parse_retry_after(" 0.5 ", now) == 0.5
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now) == pytest.approx(10.0)
    assert parse_retry_after("-5", now) == 0.0 and parse_retry_after("1e12", now) == 600.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    assert parse_retry_after("nan", now) is None


def test_server_down_at_start_waits_and_never_guesses_the_version(tmp_path: Path) -> None:
    port = free_port()
    cfg = StreamConfig(dir=tmp_path, scorer="http", url=f"http://127.0.0.1:{port}", poll_timeout=0.1,
                       backoff_s=0.05, max_backoff_s=0.2, scorer_timeout=2)
    bus = _fill(cfg)
    store = DuckDBStore(cfg.db)  # shared with the processor thread (DuckDB: one configuration per process)
    stop = threading.Event()
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(run_processor(cfg, stop=stop, until_idle=0.5, bus=bus,
                                                                      store=store)))
    worker.start()
    deadline = time.monotonic() + 20
    while (store.heartbeats().get("processor") or {}).get("status") != "waiting":
        assert time.monotonic() < deadline and worker.is_alive(), "the processor did not report waiting"
        time.sleep(0.1)
    beat = store.heartbeats()["processor"]
    assert "ConnectError" in beat["reason"] and beat["model_version"] is None
    server = ScorerServer(port)  # the server comes up late: the processor goes on by itself
    try:
        worker.join(60)
        assert not worker.is_alive()
    finally:
        stop.set()
        server.stop()
    assert out["docs"] == 2 and out["dead_letters"] == 0, out
    assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
    bus.close()
    docs = store.latest(10)
    assert sorted(d.ticker for d in docs) == ["AAPL", "TSLA"]
    assert {d.model_version for d in docs} == {"vader-fault-server:sentiment-v3:fast"}
    assert store.counts()["dead_letters"] == 0
    store.close()


def test_stop_while_waiting_for_the_server_commits_nothing(tmp_path: Path) -> None:
    cfg = StreamConfig(dir=tmp_path, scorer="http", url=f"http://127.0.0.1:{free_port()}", poll_timeout=0.1,
                       backoff_s=0.05, max_backoff_s=0.2)
    bus = _fill(cfg)
    stop = threading.Event()
    worker = threading.Thread(target=run_processor, kwargs={"cfg": cfg, "stop": stop, "bus": bus})
    worker.start()
    time.sleep(1.0)
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert bus.committed(cfg.group, cfg.topic) == {}
    bus.close()
    store = DuckDBStore(cfg.db, read_only=True)
    assert store.counts()["docs"] == 0 and store.counts()["dead_letters"] == 0
    assert store.heartbeats()["processor"]["status"] == "stopped"


@pytest.mark.slow
def test_keyed_real_server_and_processor_with_the_same_variable_store_every_post(smollm2_path: Path,
                                                                                  tmp_path: Path) -> None:
    """The finding of issue #26: `tickerpulse serve` with TICKERPULSE_API_KEY=k and `stream process --scorer
    http` with the same variable answered 401 to every call and dead-lettered all 8 posts. Now the key is
    sent: all 8 posts are judged by the served model, nothing is dead-lettered."""
    import os

    pytest.importorskip("tickerpulse.serve.app")
    port = free_port()
    env = {**os.environ, "TICKERPULSE_API_KEY": KEY}
    server = subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 401  # it is keyed
        cfg = StreamConfig(dir=tmp_path)
        bus = SqliteBus(cfg.bus_path)
        texts = ["$AAPL smashes earnings", "$TSLA recall is terrible news", "$NVDA guidance raised again",
                 "$AMD misses on revenue", "$MSFT flat ahead of the report", "$BTC rallies past resistance",
                 "$JPM beats, raises dividend", "$XOM output cut hurts margins"]
        for i, text in enumerate(texts):
            bus.produce(cfg.topic, None, Post(id=f"k{i}", source="test", text=text, created_at=time.time()).to_bytes())
        bus.flush()
        proc = subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", "stream", "process", "--dir",
                               str(tmp_path), "--scorer", "http", "--url", f"http://127.0.0.1:{port}",
                               "--until-idle", "1"], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert KEY not in proc.stdout + proc.stderr
        assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
        bus.close()
        store = DuckDBStore(cfg.db, read_only=True)
        docs = store.latest(20)
        assert len(docs) == 8 and store.counts()["dead_letters"] == 0
        assert {d.model_version for d in docs} == {"smollm2-135m:sentiment-v3:fast"}
    finally:
        server.terminate()
        server.wait(30)
