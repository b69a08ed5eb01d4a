"""Dead letters: kept whole, listed, redriven after a fix (exact bytes back on the posts topic, never twice,
a redriven good post stored exactly once), on the embedded bus and through the CLI; the embedded log's
retention; Kafka's poll interval from the batch budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.dlq import list_letters, redrive, redrive_group
from tickerpulse.stream.processor import run_processor
from tickerpulse.stream.schema import DeadLetter, Post
from tickerpulse.stream.scoring import VaderScorer
from tickerpulse.stream.store.duckdb import DuckDBStore


def post(i: int, text: str) -> bytes:
    return Post(id=f"p{i}", source="test", text=text + " " + "long " * 1000, created_at=time.time()).to_bytes()


def letter_value(d: DeadLetter) -> bytes:
    """The dead-letter topic's record value, as the processor writes it."""
    return json.dumps(d.to_dict(), ensure_ascii=False).encode("utf-8")


@pytest.fixture
def cfg(tmp_path: Path) -> StreamConfig:
    return StreamConfig(dir=tmp_path, scorer="vader", max_records=16, poll_timeout=0.05)


def test_redrive_after_a_fix_stores_each_post_once_and_never_redrives_twice(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    good = [post(0, "$AAPL beats"), post(1, "$MSFT misses badly")]
    not_utf8 = b'{"id": "x", "source": "t", "text": "$NVDA \xff", "created_at": 1}'
    for v in (good[0], not_utf8, good[1]):
        bus.produce(cfg.topic, None, v)
    bus.flush()
    run_processor(cfg, until_idle=0.2, scorer=VaderScorer(), bus=bus)
    # Two posts the scorer had failed on (as the processor letters them: stage score, the whole post), plus
    # the processor's own letter for the non-UTF-8 record. Each failed post is lettered once per ticker.
    failed = [post(2, "$TSLA recall and $F too"), post(3, "$AMD great quarter")]
    for i, v in enumerate([failed[0], failed[0], failed[1]]):
        bus.produce(cfg.dead_letter_topic, None, letter_value(DeadLetter.build(
            v, stage="score", code="model_failed", reason="backend down", topic=cfg.topic, partition=0,
            offset=1000 + i, post_id=f"p{2 + (i > 1)}", ticker=["TSLA", "F", "AMD"][i])))
    cut = DeadLetter.build(b'{"id": "big", "text": "' + b"b" * 5000 + b'"}', stage="parse", code="too_large",
                           reason="over", max_payload_bytes=1024)
    bus.produce(cfg.dead_letter_topic, None, letter_value(cut))
    bus.produce(cfg.dead_letter_topic, None, b"not a letter at all")
    bus.flush()

    listed = list_letters(cfg, bus=bus, show=10, idle_s=0.5)
    assert listed.pending == 6 and listed.by_code == {"not_utf8": 1, "model_failed": 3, "too_large": 1, "unreadable": 1}
    assert [x.problem == "" for x in listed.letters] == [True, True, True, True, False, False]
    assert "payload cut at 1024 of" in listed.letters[4].problem
    assert len(listed.letters[1].letter.raw_payload()) > 5000  # whole post, not 2 KB

    res = redrive(cfg, bus=bus, idle_s=0.5)
    assert (res.redriven, res.duplicates, len(res.skipped)) == (3, 1, 2)
    assert list_letters(cfg, bus=bus, idle_s=0.5).pending == 0  # marked: committed by the redrive group
    assert redrive(cfg, bus=bus, idle_s=0.5).redriven == 0  # never twice

    # the exact bytes are back on the posts topic, and the processor (now "fixed") takes them
    back = bus.consumer("inspect", [cfg.topic]).poll(100, 0.1)
    assert [r.value for r in back[-3:]] == [not_utf8, failed[0], failed[1]]
    run_processor(cfg, until_idle=0.2, scorer=VaderScorer(), bus=bus)
    # redriving the same letters again by hand (a crash before the commit) must not duplicate anything
    for v in failed:
        bus.produce(cfg.topic, None, v)
    bus.flush()
    run_processor(cfg, until_idle=0.2, scorer=VaderScorer(), bus=bus)
    bus.close()

    store = DuckDBStore(cfg.db, read_only=True)
    ids = store.doc_ids()
    assert len(ids) == len(set(ids)) == 5  # AAPL, MSFT, TSLA, F, AMD: each once
    assert sorted(d.ticker for d in store.latest(10)) == ["AAPL", "AMD", "F", "MSFT", "TSLA"]
    # the non-UTF-8 record failed again: a new letter (new bus position), pending for the next look
    assert list_letters(cfg, show=5, idle_s=0.5).by_code == {"not_utf8": 1}


def test_dlq_cli_list_and_redrive(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    bus.produce(cfg.topic, None, b'{"id": "q", "source": "t", "text": "$GME", "created_at": 1e19}')
    bus.produce(cfg.topic, None, post(7, "$AAPL up"))
    bus.close()

    def tp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", "stream", *args, "--dir", str(cfg.dir)],
                              capture_output=True, text=True, timeout=120)

    assert tp("process", "--scorer", "vader", "--until-idle", "1").returncode == 0
    out = tp("dlq", "list")
    assert out.returncode == 0 and "1 dead letter(s) pending" in out.stdout
    assert "timestamp out of range: 1e+19" in out.stdout and '"created_at": 1e19' in out.stdout
    listed = json.loads(tp("dlq", "list", "--json").stdout)
    assert listed["pending"] == 1 and listed["letters"][0]["redrivable"] is True
    red = tp("dlq", "redrive", "--json")
    assert red.returncode == 0 and json.loads(red.stdout)["redriven"] == 1
    assert json.loads(tp("dlq", "list", "--json").stdout)["pending"] == 0
    assert json.loads(tp("dlq", "redrive", "--json").stdout)["redriven"] == 0
    bus = SqliteBus(cfg.bus_path)
    assert bus.committed(redrive_group(cfg.group), cfg.dead_letter_topic) == bus.end_offsets(cfg.dead_letter_topic)
    bus.close()


def test_redrive_limit_takes_the_first_letters_only(cfg: StreamConfig) -> None:
    bus = SqliteBus(cfg.bus_path)
    for i in range(5):
        bus.produce(cfg.dead_letter_topic, None, letter_value(DeadLetter.build(
            post(i, f"$AAPL {i}"), stage="score", code="model_failed", reason="r", post_id=f"p{i}")))
    bus.flush()
    assert redrive(cfg, bus=bus, limit=2, idle_s=0.5).redriven == 2
    assert list_letters(cfg, bus=bus, idle_s=0.5).pending == 3
    assert redrive(cfg, bus=bus, idle_s=0.5).redriven == 3 and bus.count(cfg.topic) == 5
    bus.close()


def test_embedded_log_trims_committed_records_past_retention(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "b.sqlite", retention_s=0, trim_every_s=0)
    for i in range(10):
        bus.produce("t", None, f"v{i}".encode())
        bus.produce("t.dlq", None, f"d{i}".encode())
    bus.flush()
    c = bus.consumer("g", ["t"])
    first = c.poll(6, 0.1)
    c.commit({("t", 0): first[5].offset + 1})
    assert bus.count("t") == 4 and bus.count("t.dlq") == 10  # committed records went; an uncommitted topic stays
    other = bus.consumer("late", ["t"])  # a second group that committed less holds records back
    other.commit({("t", 0): first[0].offset})
    c.commit(None)  # c had polled 6 records: same position
    assert bus.count("t") == 4
    assert [r.value for r in c.poll(10, 0.1)] == [f"v{i}".encode() for i in range(6, 10)]  # unread never trimmed
    bus.close()

    keep = SqliteBus(tmp_path / "k.sqlite", retention_s=3600, trim_every_s=0)
    for i in range(5):
        keep.produce("t", None, b"x")
    keep.flush()
    kc = keep.consumer("g", ["t"])
    kc.poll(10, 0.1)
    kc.commit()
    assert keep.count("t") == 5  # committed, but younger than the retention
    keep.close()


def test_retention_setting_reaches_the_embedded_bus(tmp_path: Path) -> None:
    from tickerpulse.config import load
    from tickerpulse.stream import registry

    assert StreamConfig().log_retention_s == 86_400
    cfg = load(StreamConfig, None, {"dir": str(tmp_path), "log_retention_s": 60})
    bus = registry.open_bus(cfg)
    assert bus.retention_s == 60
    bus.close()
    forever = registry.open_bus(load(StreamConfig, None, {"dir": str(tmp_path), "log_retention_s": float("inf")}))
    forever.produce("t", None, b"x")
    forever.flush()
    forever.consumer("g", ["t"]).commit({("t", 0): 10**9})
    assert forever.count("t") == 1  # .inf keeps everything
    forever.close()


def test_kafka_poll_interval_follows_the_batch_budget() -> None:
    pytest.importorskip("confluent_kafka", reason="the stream extra (confluent-kafka) is not installed")
    from tickerpulse.stream.bus.kafka import max_poll_interval_ms, open_bus

    assert max_poll_interval_ms(600) == 660_000 and max_poll_interval_ms(10**9) == 86_400_000
    bus = open_bus(StreamConfig(bus="kafka", kafka_bootstrap="127.0.0.1:1", max_batch_s=1800))
    assert bus.max_poll_interval_ms == 1_860_000  # no broker needed: nothing connects until used
    explicit = open_bus(StreamConfig(bus="kafka", kafka_bootstrap="127.0.0.1:1",
                                     bus_options={"max_poll_interval_ms": 1000, "session_timeout_ms": 6000}))
    assert explicit.max_poll_interval_ms == 6000  # never below the session timeout (librdkafka requires it)


def test_a_store_file_from_before_whole_payloads_still_reads(tmp_path: Path) -> None:
    """Old DuckDB files have no `payload_encoding` column: a writer adds it, a read-only reader copes."""
    import duckdb

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("""CREATE TABLE dead_letters (dl_id VARCHAR PRIMARY KEY, stage VARCHAR, code VARCHAR, reason VARCHAR,
        payload VARCHAR, payload_bytes BIGINT, attempts INTEGER, topic VARCHAR, "partition" INTEGER, "offset" BIGINT,
        post_id VARCHAR, ticker VARCHAR, created_at TIMESTAMP)""")
    con.execute("INSERT INTO dead_letters VALUES ('a', 'parse', 'bad_json', 'r', '{', 1, 1, 't', 0, 3, NULL, NULL,"
                " TIMESTAMP '2024-05-01 12:00:00')")
    con.close()
    (old,) = DuckDBStore(db, read_only=True).dead_letters()
    assert old.raw_payload() == b"{" and old.payload_encoding == "utf-8"
    writer = DuckDBStore(db)  # opening to write migrates the table
    writer.dead_letter([DeadLetter.build(b"\xff", stage="parse", code="not_utf8", reason="r", topic="t", offset=4,
                                         partition=0)])
    assert sorted(d.raw_payload() for d in writer.dead_letters()) == [b"{", b"\xff"]
    writer.close()
