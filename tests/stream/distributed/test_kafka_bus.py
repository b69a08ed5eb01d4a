"""The Kafka bus on two independent broker implementations (noida-db and Tansu): topic creation,
idempotent produce, exact end offsets (Tansu under-reports its high watermark), consumer groups that
resume with no overlap, and the local processor running on it end to end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.stream.distributed.util import BAD_RECORDS, corpus, drain, expected_docs, produce, unique

pytestmark = pytest.mark.integration
BROKERS = ["noida", "tansu"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_bus_contract(broker: Any) -> None:
    from tickerpulse.stream.bus.kafka import KafkaBus

    bus = KafkaBus(broker.kafka, partitions=3)
    topic, group = unique("contract"), unique("g")
    bus.ensure_topics([topic, f"{topic}.dlq"])
    bus.ensure_topics([topic])  # idempotent
    assert bus.partitions_of(topic) == [0, 1, 2]
    for i in range(300):
        bus.produce(topic, f"k{i}", f"v{i}".encode())
    assert bus.flush(30) == 0
    ends = bus.end_offsets(topic)
    assert sum(ends.values()) == 300  # exact, even where the reported watermark is wrong

    c = bus.consumer(group, [topic])
    first: list[Any] = []
    while len(first) < 120:
        first += c.poll(50, 2.0)
    c.commit()
    c.close()
    assert sum(bus.committed(group, topic).values()) == len(first)

    c = bus.consumer(group, [topic])  # a restarted member resumes from the commits
    rest: list[Any] = []
    while len(first) + len(rest) < 300:
        got = c.poll(500, 5.0)
        assert got, f"stalled at {len(first) + len(rest)} of 300"
        rest += got
    assert c.poll(500, 1.0) == []
    c.commit()
    assert sum(c.lag().values()) == 0
    c.close()
    keys = [r.key for r in first + rest]
    assert len(keys) == 300 and len(set(keys)) == 300  # none lost, none twice
    assert bus.committed(group, topic) == ends
    bus.close()


def test_local_processor_on_kafka_into_elasticsearch(broker: Any, noida: Any, tmp_path: Any) -> None:
    """The stream engineer's local processor, unchanged, on the Kafka bus and the Elasticsearch store."""
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.processor import run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    topic, index = unique("local"), unique("tp-local")
    cfg = StreamConfig(dir=tmp_path, bus="kafka", kafka_bootstrap=broker.kafka, topic=topic, store="elasticsearch",
                       es_url=noida.es_url, es_index=index, scorer="vader", max_records=50)
    posts = corpus(150)
    expected = expected_docs(posts)
    bus = KafkaBus(broker.kafka, partitions=2)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    produce(bus, topic, posts)
    produce(bus, topic, posts[:10], bad=False)  # re-sent posts: judged again, stored once

    totals = run_processor(cfg, until_idle=4.0)
    assert totals["records"] == 150 + 10 + len(BAD_RECORDS)

    store = ElasticsearchStore(noida.es_url, index, read_only=True)
    counts = store.counts()
    assert counts["docs"] == len(expected)
    assert sorted(store.doc_ids()) == sorted(expected)
    assert counts["posts"] == 150
    assert counts["dead_letters"] == len(BAD_RECORDS)
    assert {d.code for d in store.dead_letters(10)} == {code for _, code in BAD_RECORDS.values()}
    dlq = drain(bus, cfg.dead_letter_topic)
    assert {json.loads(r.value)["code"] for r in dlq} == {code for _, code in BAD_RECORDS.values()}
    assert bus.committed(cfg.group, topic) == bus.end_offsets(topic)
    store.close()
    bus.close()
