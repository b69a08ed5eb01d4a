"""Dead letters on Kafka (noida-db and Tansu): the processor letters bad records with whole payloads, `dlq`
lists and redrives them through the same `Bus` interface as on the embedded bus, a letter is never
redriven twice, and a redriven good post is stored exactly once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.stream.distributed.util import unique

pytestmark = pytest.mark.integration


@pytest.fixture(params=["noida", "tansu"])
def broker(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_dead_letters_list_and_redrive_on_kafka(broker: Any, tmp_path: Any) -> None:
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.dlq import list_letters, redrive, redrive_group
    from tickerpulse.stream.processor import run_processor
    from tickerpulse.stream.schema import DeadLetter, Post
    from tickerpulse.stream.scoring import VaderScorer
    from tickerpulse.stream.store.duckdb import DuckDBStore

    topic = unique("dlq")
    cfg = StreamConfig(dir=tmp_path, bus="kafka", kafka_bootstrap=broker.kafka, topic=topic, group=unique("g"),
                       scorer="vader", max_records=50, poll_timeout=0.5)
    bus = KafkaBus(broker.kafka, partitions=2)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    now = time.time()
    good = [Post(id=f"k{i}", source="t", text=f"${s} beats estimates", created_at=now).to_bytes()
            for i, s in enumerate(["AAPL", "MSFT", "NVDA"])]
    bad = [b'{"id": "b1", "source": "t", "text": "$GME", "created_at": 1e19}',
           b'{"id": "b2", "source": "t", "text": "$GME \xff", "created_at": 1}']
    for i, v in enumerate(good + bad):
        bus.produce(cfg.topic, f"key{i}", v)
    bus.flush(30)
    run_processor(cfg, until_idle=4.0, scorer=VaderScorer(), bus=bus)

    listed = list_letters(cfg, bus=bus, idle_s=2.0)
    assert listed.pending == 2 and sorted(x.letter.raw_payload() for x in listed.letters) == sorted(bad)
    # a post the scorer had failed on, lettered as the processor does (the whole post), to redrive after a fix
    failed = Post(id="k9", source="t", text="$TSLA recall " + "x" * 5000, created_at=now).to_bytes()
    letter = DeadLetter.build(failed, stage="score", code="model_failed", reason="backend down", post_id="k9",
                              ticker="TSLA")
    bus.produce(cfg.dead_letter_topic, "k9", json.dumps(letter.to_dict()).encode())
    bus.flush(30)

    res = redrive(cfg, bus=bus, idle_s=2.0)
    assert res.redriven == 3 and not res.skipped
    ends = bus.end_offsets(cfg.dead_letter_topic)
    assert bus.committed(redrive_group(cfg.group), cfg.dead_letter_topic) == {p: e for p, e in ends.items() if e}
    assert redrive(cfg, bus=bus, idle_s=2.0, timeout_s=8.0).redriven == 0  # never twice

    run_processor(cfg, until_idle=4.0, scorer=VaderScorer(), bus=bus)
    store = DuckDBStore(cfg.db, read_only=True)
    ids = store.doc_ids()
    assert len(ids) == len(set(ids)) == 4
    assert sorted(d.ticker for d in store.latest(10)) == ["AAPL", "MSFT", "NVDA", "TSLA"]
    # the two bad records failed again: new letters, pending again (with their exact bytes)
    again = list_letters(cfg, bus=bus, idle_s=2.0)
    assert again.pending == 2 and sorted(x.letter.raw_payload() for x in again.letters) == sorted(bad)
    bus.close()
