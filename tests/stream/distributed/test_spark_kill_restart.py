"""The user's command, `tickerpulse stream run --bus kafka --processor spark --store elasticsearch`, with
the Spark job killed (SIGKILL, mid-stream) and restarted by the supervisor: every (post, ticker) ends up in
Elasticsearch exactly once, none lost, none duplicated; the run then exits by itself once the processor's
mirrored group offsets reach the end of the topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stream.distributed.util import BAD_RECORDS, corpus, expected_docs, produce, unique, write_jsonl

pytestmark = pytest.mark.integration


def _processor_child(supervisor: int) -> Any:
    import psutil

    for child in psutil.Process(supervisor).children():
        try:
            if "process" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.timeout(1800)  # two Spark start-ups in subprocesses: minutes on a busy 2-core machine
def test_stream_run_spark_killed_and_restarted_loses_and_duplicates_nothing(noida: Any, tmp_path: Path) -> None:
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    topic, index = unique("kill"), unique("tp-kill")
    posts = corpus(400, prefix="k")
    expected = expected_docs(posts)
    conf = tmp_path / "stream.yaml"
    conf.write_text(yaml.safe_dump({
        "dir": str(tmp_path / "run"), "bus": "kafka", "kafka_bootstrap": noida.kafka, "topic": topic,
        "store": "elasticsearch", "es_url": noida.es_url, "es_index": index, "processor": "spark",
        "scorer": "vader", "max_records": 40, "bus_options": {"partitions": 3},
        "processor_options": {"trigger_interval": "0 seconds"},
    }))
    bus = KafkaBus(noida.kafka, partitions=3)
    bus.ensure_topics([topic, f"{topic}.dlq"])
    produce(bus, topic, [], bad=True)  # malformed records first; the replay source adds the posts

    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerpulse.cli.main", "stream", "run", "--config", str(conf), "--source", "replay",
         "--file", str(write_jsonl(tmp_path / "posts.jsonl", posts)), "--speed", "0", "--no-dashboard", "--exit-when-done"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    store = ElasticsearchStore(noida.es_url, index, read_only=True)
    try:
        deadline = time.monotonic() + 420
        while store.counts()["docs"] == 0:  # the first batch is in: now kill the job mid-stream
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Spark processor wrote nothing"
            time.sleep(0.2)
        child = _processor_child(proc.pid)
        assert child is not None
        os.kill(child.pid, signal.SIGKILL)
        at_kill = store.counts()["docs"]
        assert at_kill < len(expected), "the job finished before the kill: make the stream longer"

        assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out = (tmp_path / "run.log").read_text()
    assert "restarting" in out and "processor caught up" in out

    ids = store.doc_ids()
    assert len(ids) == len(set(ids))                   # no duplicates
    assert sorted(ids) == sorted(expected)             # none lost, none invented
    counts = store.counts()
    assert counts["posts"] == len(posts)
    assert counts["dead_letters"] == len(BAD_RECORDS)
    assert bus.committed("tickerpulse-processor", topic) == bus.end_offsets(topic)
    store.close()
    bus.close()
