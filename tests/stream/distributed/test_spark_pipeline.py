"""producer -> Kafka -> Spark Structured Streaming (trigger availableNow, our Python Data Source Kafka reader,
pandas-UDF scoring) -> Elasticsearch, against real servers: counts and aggregates equal what the corpus
implies, malformed records become dead letters (store + dead-letter topic), a second run over the same
checkpoint reads only new records, and the same job reads a Tansu broker whose watermark is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.stream.distributed.util import (BAD_RECORDS, corpus, drain, expected_docs, expected_stats, produce,
                                           unique)

pytestmark = pytest.mark.integration


def _cfg(tmp_path: Path, kafka: str, es_url: str, topic: str, index: str, max_records: int,
         available_now: bool = True) -> Any:
    from tickerpulse.stream.config import StreamConfig

    opts = {"available_now": True} if available_now else {"trigger_interval": "0 seconds"}
    return StreamConfig(dir=tmp_path, bus="kafka", kafka_bootstrap=kafka, topic=topic, store="elasticsearch",
                        es_url=es_url, es_index=index, processor="spark", scorer="vader", max_records=max_records,
                        processor_options=opts)


def test_kafka_spark_elasticsearch_counts_and_aggregates(noida: Any, spark: Any, tmp_path: Path) -> None:
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.processor import post_tickers
    from tickerpulse.stream.spark.job import run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    topic, index = unique("spark"), unique("tp-spark")
    cfg = _cfg(tmp_path, noida.kafka, noida.es_url, topic, index, max_records=60)
    posts = corpus(240)
    expected = expected_docs(posts)
    bus = KafkaBus(noida.kafka, partitions=3)
    bus.ensure_topics([topic, cfg.dead_letter_topic])
    produce(bus, topic, posts)
    produce(bus, topic, posts[:12], bad=False)  # duplicates on the wire: stored once

    totals = run_processor(cfg, spark=spark)
    n_records = 240 + 12 + len(BAD_RECORDS)
    assert totals["records"] == n_records
    assert totals["batches"] >= n_records // 60  # maxOffsetsPerTrigger split the backlog

    store = ElasticsearchStore(noida.es_url, index, read_only=True)
    counts = store.counts()
    assert sorted(store.doc_ids()) == sorted(expected)  # every (post, ticker) once, nothing else
    assert counts["docs"] == len(expected)
    assert counts["posts"] == 240
    assert counts["posts_with_ticker"] == sum(1 for p in posts if post_tickers(p.text, 8, names=cfg.names))
    assert counts["dead_letters"] == len(BAD_RECORDS)
    assert {d.code for d in store.dead_letters(10)} == {code for _, code in BAD_RECORDS.values()}

    want = expected_stats(expected)
    stats = {s.ticker: s for s in store.ticker_stats(window_s=10 * 86400, limit=1000)}
    assert set(stats) == set(want)
    for ticker, (mentions, mean) in want.items():
        assert stats[ticker].mentions == mentions
        assert stats[ticker].mean_score == pytest.approx(mean, abs=1e-4)
    top = max(want, key=lambda t: want[t][0])
    assert sum(p.mentions for p in store.timeseries(top, bucket_s=300, window_s=10 * 86400)) == want[top][0]
    beat = store.heartbeats()["processor"]
    assert beat["status"] == "stopped" and beat["processor"] == "spark"
    # the re-sent posts came in a later batch than their originals, so they were written again (overwrites)
    assert beat["records"] == n_records and beat["docs"] == len(expected) + len(expected_docs(posts[:12]))

    dlq = drain(bus, cfg.dead_letter_topic)
    assert sorted(json.loads(r.value)["code"] for r in dlq) == sorted(code for _, code in BAD_RECORDS.values())
    assert bus.committed(cfg.group, topic) == bus.end_offsets(topic)  # progress mirrored to the group

    # Same checkpoint, more data: only the new records are read; replays of old posts overwrite.
    more = corpus(300)[240:]
    produce(bus, topic, more, bad=False)
    produce(bus, topic, posts[:5], bad=False)
    totals2 = run_processor(cfg, spark=spark)
    assert totals2["records"] == len(more) + 5
    assert sorted(store.doc_ids()) == sorted(expected_docs(posts + more))
    assert store.counts()["posts"] == 300
    store.close()
    bus.close()


def test_spark_reads_the_whole_topic_from_tansu(tansu: Any, noida: Any, spark: Any, tmp_path: Path) -> None:
    """Tansu reports the base offset of the last batch + 1 as high watermark; a reader that stopped there
    would lose the tail of every partition. (Continuous trigger here, stopped by `until_idle`.)"""
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.spark.job import run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    topic, index = unique("tansu"), unique("tp-tansu")
    cfg = _cfg(tmp_path, tansu.kafka, noida.es_url, topic, index, max_records=500, available_now=False)
    posts = corpus(150)
    bus = KafkaBus(tansu.kafka, partitions=2)
    bus.ensure_topics([topic, cfg.dead_letter_topic])
    produce(bus, topic, posts)
    raw = bus.end_offsets(topic, exact=False)
    assert sum(raw.values()) < len(posts), "Tansu's watermark is right now: this test no longer proves anything"

    totals = run_processor(cfg, until_idle=3.0, spark=spark)
    assert totals["records"] == len(posts) + len(BAD_RECORDS)
    store = ElasticsearchStore(noida.es_url, index, read_only=True)
    assert sorted(store.doc_ids()) == sorted(expected_docs(posts))
    assert store.counts()["dead_letters"] == len(BAD_RECORDS)
    store.close()
    bus.close()


def test_spark_scores_through_the_sentiment_endpoint(noida: Any, spark: Any, smollm2_path: Path, tmp_path: Path) -> None:
    """The real model behind `tickerpulse serve`: the pandas UDF sends batched `/v1/sentiment` requests
    (score_batch items each, at most `concurrency` in flight per task) and the answers land in Elasticsearch."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.processor import post_tickers
    from tickerpulse.stream.schema import doc_id
    from tickerpulse.stream.scoring import HttpScorer
    from tickerpulse.stream.spark.job import run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore
    from tickerpulse.task.contract import LABELS

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "serve", "--port", str(port), "--threads", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "tickerpulse serve did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        probe = HttpScorer(url)
        version = probe.ready()  # the served model, from /v1/models
        probe.close()

        topic, index = unique("http"), unique("tp-http")
        cfg = StreamConfig(dir=tmp_path, bus="kafka", kafka_bootstrap=noida.kafka, topic=topic, store="elasticsearch",
                           es_url=noida.es_url, es_index=index, processor="spark", scorer="http", url=url,
                           concurrency=2, score_batch=4, processor_options={"available_now": True})
        posts = [p for p in corpus(60, prefix="h") if post_tickers(p.text, 8, names=cfg.names)][:24]
        want = {doc_id(p.id, t, version) for p in posts
                for t in post_tickers(p.text, cfg.max_tickers_per_post, names=cfg.names)}
        bus = KafkaBus(noida.kafka, partitions=2)
        bus.ensure_topics([topic, cfg.dead_letter_topic])
        produce(bus, topic, posts, bad=False)
        totals = run_processor(cfg, spark=spark)
        assert totals["records"] == len(posts)
        store = ElasticsearchStore(noida.es_url, index, read_only=True)
        assert sorted(store.doc_ids()) == sorted(want)
        docs = store.latest(100)
        assert {d.model_version for d in docs} == {version} and version.startswith("smollm2-135m")
        assert all(d.sentiment in LABELS and -1 <= d.score <= 1 for d in docs)
        assert store.counts()["dead_letters"] == 0
        store.close()
        bus.close()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_format_kafka_without_the_connector_is_a_config_error(spark: Any, tmp_path: Path) -> None:
    """`processor_options.source: kafka` needs Spark's connector jar, which this machine cannot have: the
    error must say so and name the alternative, not dump a JVM stack trace."""
    from tickerpulse.config import ConfigError
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.spark.job import build_stream, spark_options

    cfg = StreamConfig(dir=tmp_path, bus="kafka", processor="spark", scorer="vader", processor_options={"source": "kafka"})
    with pytest.raises(ConfigError, match="source: python"):
        build_stream(spark, cfg, spark_options(cfg))
