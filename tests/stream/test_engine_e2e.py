"""The real model end to end: posts on the bus -> processor with the in-process SentimentEngine
(SmolLM2-135M, fast label scoring) -> documents in the store that carry the model's judgement."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tickerpulse.task.contract import SentimentAnswer
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import run_processor
from tickerpulse.stream.schema import Post
from tickerpulse.stream.store.duckdb import DuckDBStore

POSTS = ["$AAPL smashes earnings and raises the dividend", "$TSLA recall is terrible news for margins",
         "Nothing about any stock here", "(NASDAQ: NVDA) and $AMD both rally on chip demand"]


def _run(tmp_path: Path, mode: str) -> DuckDBStore:
    cfg = StreamConfig(dir=tmp_path, scorer="engine", mode=mode, model="smollm2-135m", poll_timeout=0.1)
    bus = SqliteBus(cfg.bus_path)
    for i, text in enumerate(POSTS):
        bus.produce(cfg.topic, None, Post(id=f"e{i}", source="test", text=text, created_at=time.time()).to_bytes())
    bus.flush()
    totals = run_processor(cfg, until_idle=0.2, bus=bus)
    assert totals["posts"] == 4 and totals["dead_letters"] == 0
    assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
    bus.close()
    return DuckDBStore(cfg.db, read_only=True)


def test_processor_with_the_real_model_fast_mode(smollm2_path: Path, tmp_path: Path) -> None:
    store = _run(tmp_path, "fast")
    docs = {d.ticker: d for d in store.latest(10)}
    assert set(docs) == {"AAPL", "TSLA", "NVDA", "AMD"}
    for d in docs.values():
        assert d.model_version == "smollm2-135m:sentiment-v3:fast" and d.latency_ms > 0  # no serving.json: the default prompt
        SentimentAnswer(ticker=d.ticker, sentiment=d.sentiment, score=d.score, reasoning=d.reasoning)
    assert store.counts()["posts_without_ticker"] == 1
    health = store.heartbeats()["processor"]
    assert health["scorer"] == "engine" and health["model_ms_per_item"] > 0


@pytest.mark.slow
def test_processor_with_the_real_model_reasoning_mode(smollm2_path: Path, tmp_path: Path) -> None:
    store = _run(tmp_path, "reasoning")
    docs = store.latest(10)
    assert len(docs) == 4 and all(d.model_version.endswith(":reasoning") for d in docs)
