"""The local processor with the real VADER scorer: malformed records dead-lettered with reasons while the
stream keeps going, retries with backoff, poison items isolated, posts without tickers counted, replays
never duplicate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tickerpulse.stream.bus.base import Record
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import process_records, run_processor, score_with_retry
from tickerpulse.stream.schema import Post
from tickerpulse.stream.scoring import VaderScorer
from tickerpulse.stream.store.duckdb import DuckDBStore


def post(i: int, text: str) -> bytes:
    return Post(id=f"p{i}", source="test", text=text, created_at=time.time()).to_bytes()


class Flaky:
    """The real VADER scorer behind a backend that fails: the first `fail_first` calls, and every call
    that contains a text with `poison` in it."""

    def __init__(self, fail_first: int = 0, poison: str | None = None) -> None:
        self.inner, self.fail_first, self.poison, self.calls = VaderScorer(), fail_first, poison, 0
        self.name, self.model_version = "flaky-vader", self.inner.model_version

    def score(self, items):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("backend unavailable")
        if self.poison and any(self.poison in t for t, _ in items):
            raise ValueError("backend chokes on this text")
        return self.inner.score(items)

    def close(self) -> None:
        pass


@pytest.fixture
def cfg(tmp_path: Path) -> StreamConfig:
    return StreamConfig(dir=tmp_path, scorer="vader", max_records=8, poll_timeout=0.1, backoff_s=0.01)


def test_malformed_records_are_dead_lettered_and_the_stream_goes_on(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    good = [post(0, "$AAPL smashes earnings, great quarter"), post(1, "$TSLA recall is terrible news"),
            post(2, "nothing to see here"), post(3, "$BTC and $ETH rally hard")]
    bad = {
        "bad_json": b'{"id": "x", "text": ',
        "not_utf8": b'{"id": "y", "text": "\xff\xfe caf\xe9"}',
        "too_large": json.dumps({"id": "z", "source": "t", "text": "$AAPL " + "x" * 1_000_000,
                                 "created_at": time.time()}).encode(),
        "not_object": b"[1, 2]",
        "invalid": b'{"id": "w", "source": "t", "created_at": 0}',
    }
    stream = [good[0], bad["bad_json"], good[1], bad["not_utf8"], bad["too_large"], good[2], bad["not_object"],
              bad["invalid"], good[3]]
    for v in stream:
        bus.produce(cfg.topic, None, v)
    bus.flush()
    totals = run_processor(cfg, until_idle=0.5, scorer=VaderScorer(), bus=bus)

    store = DuckDBStore(cfg.db, read_only=True)
    c = store.counts()
    assert totals["records"] == 9 and totals["posts"] == 4 and totals["dead_letters"] == 5
    assert (c["posts"], c["posts_with_ticker"], c["posts_without_ticker"], c["docs"]) == (4, 3, 1, 4)
    assert c["dead_letters"] == 5
    dead = {d.code: d for d in store.dead_letters(10)}
    assert set(dead) == set(bad)
    assert "bytes > limit" in dead["too_large"].reason and dead["too_large"].payload_bytes > 1_000_000
    assert dead["too_large"].truncated and len(dead["too_large"].raw_payload()) == cfg.max_post_bytes  # not 2 KB
    assert "invalid UTF-8" in dead["not_utf8"].reason and "text: Field required" in dead["invalid"].reason
    assert all(d.stage == "parse" and d.topic == cfg.topic and d.offset is not None for d in dead.values())
    by_ticker = {d.ticker: d for d in store.latest(10)}
    assert set(by_ticker) == {"AAPL", "TSLA", "BTC", "ETH"}
    assert by_ticker["AAPL"].sentiment == "positive" and by_ticker["TSLA"].sentiment == "negative"
    assert by_ticker["BTC"].asset_class == "crypto"
    # the dead-letter topic holds them too, for reprocessing; everything was committed
    dlq = bus.consumer("inspect", [cfg.dead_letter_topic]).poll(100, 0.1)
    assert sorted(json.loads(r.value)["code"] for r in dlq) == sorted(bad)
    assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
    assert store.heartbeats()["processor"]["status"] == "stopped"
    bus.close()


def test_posts_are_judged_for_the_tickers_of_the_tasks_rule(cfg: StreamConfig) -> None:
    """The (post, ticker) pairs follow `questions_of`: symbols in order of first mention, each once, at most
    `max_tickers_per_post`; a post naming none is marked, never judged about the market."""
    texts = ["$NVDA beats; (NASDAQ: AMD) lags, $nvda again, then $TSLA, $AAPL and $MSFT",
             "AAPL up 3% while the CEO talks about EPS", "nothing to see here"]
    records = [Record(cfg.topic, 0, i, None, post(i, t), time.time()) for i, t in enumerate(texts)]
    res = process_records(records, VaderScorer(), cfg.model_copy(update={"max_tickers_per_post": 3}))
    assert [(m.post_id, m.tickers, m.n_tickers) for m in res.marks] == [
        ("p0", ["NVDA", "AMD", "TSLA"], 3), ("p1", ["AAPL"], 1), ("p2", [], 0)]
    assert [(d.post_id, d.ticker) for d in res.docs] == [("p0", "NVDA"), ("p0", "AMD"), ("p0", "TSLA"),
                                                         ("p1", "AAPL")]
    assert res.items == 4 and not res.dead


def test_posts_naming_a_company_are_judged_for_its_ticker(cfg: StreamConfig) -> None:
    """The stream finds tickers by company name too (`names`, on by default): a post naming only "Tesla" is
    scored for TSLA; names off (`--no-names`), the same post is marked without a ticker."""
    texts = ["Tesla is tanking", "Apple and $MSFT both beat", "I ate an apple", "price target raised to $50"]
    records = [Record(cfg.topic, 0, i, None, post(i, t), time.time()) for i, t in enumerate(texts)]
    assert cfg.names
    res = process_records(records, VaderScorer(), cfg)
    assert [(m.post_id, m.tickers) for m in res.marks] == [("p0", ["TSLA"]), ("p1", ["AAPL", "MSFT"]), ("p2", []),
                                                           ("p3", [])]
    assert [(d.post_id, d.ticker) for d in res.docs] == [("p0", "TSLA"), ("p1", "AAPL"), ("p1", "MSFT")]
    off = process_records(records, VaderScorer(), cfg.model_copy(update={"names": False}))
    assert [(m.post_id, m.tickers) for m in off.marks] == [("p0", []), ("p1", ["MSFT"]), ("p2", []), ("p3", [])]


def test_retries_then_poison_items_go_to_dead_letters(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    for i, text in enumerate(["$AAPL good", "$MSFT POISON pill", "$NVDA great", "$AMD fine"]):
        bus.produce(cfg.topic, None, post(i, text))
    bus.flush()
    flaky = Flaky(fail_first=2, poison="POISON")
    cfg2 = cfg.model_copy(update={"max_attempts": 3})
    run_processor(cfg2, until_idle=0.5, scorer=flaky, bus=bus)
    store = DuckDBStore(cfg.db, read_only=True)
    assert sorted(d.ticker for d in store.latest(10)) == ["AAPL", "AMD", "NVDA"]
    (dl,) = store.dead_letters()
    assert (dl.stage, dl.code, dl.ticker, dl.post_id) == ("score", "model_failed", "MSFT", "p1")
    assert "backend chokes" in dl.reason and dl.attempts == 6  # 3 with its batch, 3 alone
    assert store.heartbeats()["processor"]["retries"] >= 2
    bus.close()


def test_score_with_retry_backs_off_exponentially() -> None:
    sleeps: list[float] = []
    answers, failures, retries = score_with_retry(Flaky(fail_first=2), [("$A up", "A")], max_attempts=3,
                                                  backoff_s=0.5, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0] and retries == 2 and failures == [] and answers[0]["ticker"] == "A"


def test_replaying_the_topic_never_duplicates(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    for i in range(20):
        bus.produce(cfg.topic, None, post(i, f"$AAPL and $MSFT note {i}"))
    bus.flush()
    run_processor(cfg, until_idle=0.3, scorer=VaderScorer(), bus=bus)
    # a second group re-reads the whole topic (a replay): same doc ids -> same rows
    run_processor(cfg.model_copy(update={"group": "replayer"}), until_idle=0.3, scorer=VaderScorer(), bus=bus)
    store = DuckDBStore(cfg.db, read_only=True)
    assert store.counts()["docs"] == 40 and store.counts()["posts"] == 20
    bus.close()
