"""The Elasticsearch store against a real server (noida-db): it answers every Store query exactly like the
DuckDB store on the same documents, upserts are idempotent, and only aggregations noida-db supports are
used (a failing one would raise here)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.stream.distributed.util import corpus, unique

pytestmark = pytest.mark.integration


def _fixture_docs() -> tuple[list[Any], list[Any], list[Any]]:
    from tickerpulse.stream.schema import DeadLetter, PostMark, SentimentDoc

    rng = random.Random(7)
    docs, marks = [], []
    for p in corpus(240):
        tickers = rng.sample(["AAPL", "TSLA", "NVDA", "BTC", "AMD"], rng.randint(0, 3))
        marks.append(PostMark(post_id=p.id, source=p.source, created_at=p.created_at, ingested_at=p.created_at,
                              processed_at=p.created_at, n_tickers=len(tickers), tickers=tickers))
        for t in tickers:
            s = round(rng.uniform(-1, 1), 3)
            label = "positive" if s > 0.5 else "negative" if s < -0.5 else "neutral"
            docs.append(SentimentDoc.build(p, {"sentiment": label, "score": s, "reasoning": "r"}, ticker=t,
                                           asset_class="crypto" if t == "BTC" else "equity", model_version="m:v1:fast",
                                           ingested_at=p.created_at + timedelta(seconds=1), latency_ms=rng.uniform(1, 50),
                                           processed_at=p.created_at + timedelta(seconds=2)))
    dead = [DeadLetter.build(b"{", stage="parse", code="bad_json", reason="cut", topic="t", partition=0, offset=1),
            DeadLetter.build(b"\xff", stage="parse", code="not_utf8", reason="byte 0", topic="t", partition=1, offset=9)]
    return docs, marks, dead


def _same(a: list[dict], b: list[dict]) -> bool:
    """Equal, except mean scores within 1e-3: two engines sum doubles in different orders, so a mean on a
    rounding boundary (x.xxxx5) may round either way at 4 decimals."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "mean_score"} for r in rows]  # noqa: E731
    return strip(a) == strip(b) and all(abs(x.get("mean_score", 0) - y.get("mean_score", 0)) < 1e-3 for x, y in zip(a, b))


def test_same_answers_as_duckdb(noida: Any, tmp_path: Path) -> None:
    from tickerpulse.stream.schema import DeadLetter
    from tickerpulse.stream.store.duckdb import DuckDBStore
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    docs, marks, dead = _fixture_docs()
    es = ElasticsearchStore(noida.es_url, unique("tp-parity"))
    duck = DuckDBStore(tmp_path / "s.duckdb", persistent=True)
    for store in (es, duck):
        with store.session():
            store.upsert(docs)
            store.mark_posts(marks)
            store.dead_letter(dead)
            store.heartbeat("processor", {"posts_per_s": 2.5, "status": "running"})
        store.upsert(docs[:25])  # replays overwrite
        store.dead_letter([DeadLetter.build(b"{", stage="parse", code="bad_json", reason="again", attempts=4,
                                            topic="t", partition=0, offset=1)])

    assert es.counts() == duck.counts()
    assert es.counts()["docs"] == len(docs)
    for by in ("mentions", "bullish", "bearish"):
        for window in (3600.0, 600.0):
            assert _same([s.to_dict() for s in es.ticker_stats(window, 10, by)],
                         [s.to_dict() for s in duck.ticker_stats(window, 10, by)]), (by, window)
    for ticker in ("AAPL", "BTC", "NOPE"):
        assert _same([p.to_dict() for p in es.timeseries(ticker, 300, 3600)], [p.to_dict() for p in duck.timeseries(ticker, 300, 3600)])
    assert [d.doc_id for d in es.latest(7)] == [d.doc_id for d in duck.latest(7)]
    assert [d.doc_id for d in es.latest(5, "BTC")] == [d.doc_id for d in duck.latest(5, "BTC")]
    assert sorted((d.dl_id, d.attempts) for d in es.dead_letters()) == sorted((d.dl_id, d.attempts) for d in duck.dead_letters())
    assert max(d.attempts for d in es.dead_letters()) == 4
    assert es.heartbeats()["processor"]["posts_per_s"] == 2.5
    lat_es = sorted(round(x["latency_ms"], 2) for x in es.latency_sample(1000))
    lat_duck = sorted(round(x["latency_ms"], 2) for x in duck.latency_sample(1000))
    assert lat_es == lat_duck
    # the dashboard reads through the Store protocol only: it shows the same page from either store
    from tickerpulse.stream.dashboard.app import snapshot

    page_es, page_duck = snapshot(es, window_s=3600), snapshot(duck, window_s=3600)
    for key in ("counts", "latest"):
        assert page_es[key] == page_duck[key], key
    by_id = lambda rows: sorted(rows, key=lambda d: d["dl_id"])  # noqa: E731 - ties within a millisecond
    assert by_id(page_es["dead_letters"]) == by_id(page_duck["dead_letters"])
    for key in ("top_mentions", "top_bullish", "top_bearish"):
        assert _same(page_es[key], page_duck[key]), key
    assert page_es["series"].keys() == page_duck["series"].keys()
    assert all(_same(page_es["series"][t], page_duck["series"][t]) for t in page_es["series"])
    es.close()
    duck.close()


def test_template_mapping_and_read_only(noida: Any) -> None:
    from tickerpulse.stream.schema import DOC_FIELDS
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore, StoreWriteError

    index = unique("tp-tpl")
    ro = ElasticsearchStore(noida.es_url, index, read_only=True)  # nothing exists yet: reads are empty
    assert ro.counts() == dict.fromkeys(["docs", "posts", "posts_with_ticker", "posts_without_ticker", "dead_letters", "tickers"], 0)
    assert ro.ticker_stats() == [] and ro.latest() == [] and ro.timeseries("AAPL") == [] and ro.heartbeats() == {}
    with pytest.raises(StoreWriteError):
        ro.heartbeat("x", {})

    es = ElasticsearchStore(noida.es_url, index)
    props = es.es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert {k: v["type"].replace("double", "float") for k, v in props.items()} == DOC_FIELDS
    tpl = es.es.indices.get_index_template(name=index)["index_templates"][0]["index_template"]
    assert tpl["index_patterns"] == [index]
    es.close()
