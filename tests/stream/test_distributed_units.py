"""Pure parts of the distributed backends, without servers: offset admission (maxOffsetsPerTrigger),
progress parsing, the Spark stages as plain functions on pandas frames, option validation, infra helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tickerpulse.config import ConfigError
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.schema import Post, doc_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("start", "ends", "limit", "want"), [
    ({"t": {"0": 0, "1": 0}}, {"t": {"0": 10, "1": 10}}, 100, {"t": {"0": 10, "1": 10}}),  # all fits
    ({"t": {"0": 0, "1": 0}}, {"t": {"0": 10, "1": 10}}, 10, {"t": {"0": 5, "1": 5}}),     # fair split
    ({"t": {"0": 0, "1": 5}}, {"t": {"0": 100, "1": 10, "2": 3}}, 10, {"t": {"0": 10, "1": 5, "2": 0}}),  # proportional
    ({}, {"t": {"0": 1, "1": 1, "2": 1}}, 2, {"t": {"0": 1, "1": 1, "2": 0}}),            # rounding leftovers
    ({"t": {"0": 7}}, {"t": {"0": 7}}, 5, {"t": {"0": 7}}),                                # nothing new
    ({"a": {"0": 0}, "b": {"0": 0}}, {"a": {"0": 30}, "b": {"0": 10}}, 8, {"a": {"0": 6}, "b": {"0": 2}}),  # two topics
])
def test_cap_offsets(start: dict, ends: dict, limit: int, want: dict) -> None:
    pytest.importorskip("pyspark")
    from tickerpulse.stream.spark.source import cap_offsets

    got = cap_offsets(start, ends, limit)
    assert got == want
    admitted = sum(got[t][p] - start.get(t, {}).get(p, 0) for t in got for p in got[t])
    assert admitted == min(limit, sum(e - start.get(t, {}).get(p, 0) for t in ends for p, e in ends[t].items()))


def test_end_offsets_from_progress() -> None:
    from tickerpulse.stream.spark.job import _end_offsets

    assert _end_offsets({"sources": [{"endOffset": '{"t": {"0": 5, "1": 7}}'}]}) == {"t": {"0": 5, "1": 7}}
    assert _end_offsets({"sources": [{"endOffset": {"t": {"2": 9}}}]}) == {"t": {"2": 9}}  # connector style
    assert _end_offsets(None) == {} and _end_offsets({"sources": [{"endOffset": "not json"}]}) == {}


def _cfg(**kw: object) -> StreamConfig:
    return StreamConfig(**{"scorer": "vader", "bus": "kafka", "processor": "spark", **kw})


def test_spark_stages_as_plain_functions() -> None:
    pd = pytest.importorskip("pandas")
    from tickerpulse.stream.spark.pipeline import ANSWER_DDL, PARSED_COLS, build_outputs, parse_posts, score_series

    conf = _cfg().model_dump(mode="json")
    good = Post(id="a1", source="t", text="$AAPL beats, great quarter; $TSLA awful", created_at=0)
    none = Post(id="a2", source="t", text="markets were quiet today", created_at=1)
    frame = pd.DataFrame({"value": [good.to_bytes(), b"{oops", none.to_bytes(), good.to_bytes()],
                          "topic": ["t"] * 4, "partition": [0] * 4, "offset": [0, 1, 2, 3],
                          "timestamp": [pd.Timestamp("2024-05-01T00:00:00Z")] * 4})
    (parsed,) = list(parse_posts(conf)(iter([frame])))
    assert list(parsed.columns) == PARSED_COLS
    assert sorted(parsed["kind"]) == ["dead", "item", "item", "mark", "mark"]  # the duplicate is judged once
    answers = score_series(conf, parsed["text"], parsed["ticker"])
    assert list(answers.columns) == [c.split()[0] for c in ANSWER_DDL.split(", ")]
    items = parsed["kind"] == "item"
    assert answers.loc[items, "sentiment"].notna().all() and answers.loc[~items, "sentiment"].isna().all()

    rows = [{**r, **a} for r, a in zip(parsed.to_dict("records"), answers.to_dict("records"))]
    rows[list(parsed["ticker"]).index("TSLA")].update(sentiment=None, error="ScoringError: boom", attempts=3)
    docs, marks, dead = build_outputs(rows, "vader-3.3.2")
    from tickerpulse.stream.spark.pipeline import model_version

    assert model_version(_cfg()) == "vader-3.3.2"  # what the workers' scorer reports, without a model load
    assert model_version(_cfg(scorer="engine", model="smollm2-135m")).startswith("smollm2-135m:")
    assert [d.doc_id for d in docs] == [doc_id("a1", "AAPL", "vader-3.3.2")]
    assert {m.post_id: m.n_tickers for m in marks} == {"a1": 2, "a2": 0}
    assert sorted((d.stage, d.code) for d in dead) == [("parse", "bad_json"), ("score", "model_failed")]
    assert next(d for d in dead if d.stage == "score").attempts == 3


def test_option_errors_name_the_key() -> None:
    from tickerpulse.stream.spark.job import run_processor, spark_options

    with pytest.raises(ConfigError, match="processor_options.masterr"):
        spark_options(_cfg(processor_options={"masterr": "local[1]"}))
    with pytest.raises(ConfigError, match="--bus kafka"):
        run_processor(_cfg(bus="sqlite"))
    from tickerpulse.stream.bus.kafka import open_bus

    with pytest.raises(ConfigError, match="partitionz"):
        open_bus(_cfg(bus_options={"partitionz": 3}))
    from tickerpulse.stream.store.elasticsearch import store_kwargs

    with pytest.raises(ConfigError, match="refrsh"):
        store_kwargs(_cfg(store_options={"refrsh": "false"}))


def test_shipped_distributed_config_loads() -> None:
    from tickerpulse.config import load_yaml
    from tickerpulse.stream.spark.job import spark_options
    from tickerpulse.stream.store.elasticsearch import store_kwargs

    cfg = StreamConfig.model_validate(load_yaml(ROOT / "configs" / "stream-distributed.yaml"))
    assert (cfg.bus, cfg.processor, cfg.store) == ("kafka", "spark", "elasticsearch")
    spark_options(cfg)
    store_kwargs(cfg)


def test_infra_stop_pid_and_empty_state(tmp_path: Path) -> None:
    from tickerpulse.stream import infra

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    infra.stop_pid(proc.pid, grace=2.0, proc=proc)  # SIGINT ends it (KeyboardInterrupt)
    assert proc.poll() is not None
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN);"
                                 " print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    infra.stop_pid(stubborn.pid, grace=0.5, proc=stubborn)  # ignores SIGINT: killed after the grace period
    assert stubborn.poll() == -9
    stubborn.stdout.close()
    assert infra.status(tmp_path) == [] and infra.down(tmp_path) == []
    (tmp_path / infra.STATE_FILE).write_text(json.dumps({"servers": [
        {"kind": "noida", "pid": proc.pid, "log_path": "x", "kafka": "127.0.0.1:1", "es_url": None, "data_dir": None}]}))
    assert infra.status(tmp_path)[0]["alive"] is False  # a dead pid is never "ours"
