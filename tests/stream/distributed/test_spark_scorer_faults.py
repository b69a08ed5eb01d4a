"""The Spark processor under a scorer outage (issue #26): the micro-batch fails instead of dead-lettering
good posts, and the next run re-does it from the checkpoint: every (post, ticker) stored once, no dead
letters. Real Kafka/Elasticsearch (noida-db), real Spark, a real scorer server process
(`tests/stream/scorer_server.py`, VADER behind /v1/sentiment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.stream.distributed.util import corpus, produce, unique
from tests.stream.scorer_server import ScorerServer

pytestmark = pytest.mark.integration


def test_spark_scorer_outage_fails_the_batch_then_the_rerun_stores_everything(noida: Any, spark: Any,
                                                                                tmp_path: Path) -> None:
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.processor import post_tickers
    from tickerpulse.stream.schema import doc_id
    from tickerpulse.stream.spark.job import SparkJobError, run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    server = ScorerServer(free_port())
    try:
        topic, index = unique("faults"), unique("tp-faults")
        cfg = StreamConfig(dir=tmp_path, bus="kafka", kafka_bootstrap=noida.kafka, topic=topic, store="elasticsearch",
                           es_url=noida.es_url, es_index=index, processor="spark", scorer="http", url=server.url,
                           concurrency=1, score_batch=8, max_records=40, backoff_s=0.05, max_backoff_s=0.2,
                           processor_options={"available_now": True, "max_pause_s": 1.0})
        posts = corpus(60, prefix="o")
        version = "vader-fault-server:sentiment-v3:fast"
        want = {doc_id(p.id, t, version) for p in posts
                for t in post_tickers(p.text, cfg.max_tickers_per_post, names=cfg.names)}
        bus = KafkaBus(noida.kafka, partitions=2)
        bus.ensure_topics([topic, cfg.dead_letter_topic])
        produce(bus, topic, posts, bad=False)
        bus.close()

        server.control(sentiment_down=503)  # /v1/models answers (the driver learns the version), scoring fails
        with pytest.raises(SparkJobError, match="ScorerUnavailable"):
            run_processor(cfg, spark=spark)
        assert server.stats()["faults_sent"].get("503", 0) > 0
        store = ElasticsearchStore(noida.es_url, index, read_only=True)
        assert store.counts()["dead_letters"] == 0 and set(store.doc_ids()) <= want

        server.control(sentiment_down=None)  # back: the rerun starts from the checkpoint's last finished batch
        totals = run_processor(cfg, spark=spark)
        assert totals["dead_letters"] == 0
        assert sorted(store.doc_ids()) == sorted(want) and store.counts()["docs"] == len(want)
        assert store.counts()["posts"] == len(posts) and store.counts()["dead_letters"] == 0
        store.close()
    finally:
        server.stop()
