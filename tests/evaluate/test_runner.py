"""Items loading and answer scoring (no model): chat / completions / labeled records, task detection,
--limit sampling, text metrics, eval.json + eval.md writing."""

from __future__ import annotations

import json

import pytest

from tickerpulse.config import ConfigError, build
from tickerpulse.data.formats import DataError
from tickerpulse.task.contract import build_messages, format_answer
from tickerpulse.evaluate.items import load_items, resolve_data_file
from tickerpulse.evaluate.labelers import Answer, LabelerRun
from tickerpulse.evaluate.result import EvalResult, SentimentMetrics, TextMetrics
from tickerpulse.evaluate.runner import EvalConfig, latency_metrics, score_answers, write_eval


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(text, ticker, label, score):
    return {"messages": [*build_messages(text, ticker), {"role": "assistant", "content": format_answer(ticker, label, score, "r")}]}


def test_labeled_records_build_the_served_prompt(tmp_path):
    f = _write(tmp_path / "v.jsonl", [
        {"id": "a", "text": "$AAPL soars", "label": "positive", "tickers": ["AAPL"]},
        {"id": "b", "text": "Market flat", "label": "Neutral", "tickers": []},
        {"id": "c", "text": "$X sinks", "label": "bearish", "score": -0.6},
    ])
    items, task, info = load_items(f)
    assert task == "sentiment" and info["rows"] == 3 and info["kind"] == "labeled"
    assert [i.gold_label for i in items] == ["positive", "neutral", "negative"]
    assert items[0].messages == build_messages("$AAPL soars", "AAPL")
    assert items[1].messages == build_messages("Market flat", None)
    assert items[2].gold_score == -0.6 and items[2].gold_tickers is None
    none, _, _ = load_items(f, prompt_ticker="none")
    assert none[0].messages == build_messages("$AAPL soars", None)


def test_chat_gold_is_parsed_and_prompt_stops_before_the_answer(tmp_path):
    f = _write(tmp_path / "test.jsonl", [_chat("$TSLA recalls cars", "TSLA", "negative", -0.5),
                                         _chat("Rates unchanged", None, "neutral", 0.0)])
    items, task, _ = load_items(tmp_path)  # a folder: reads test.jsonl
    assert task == "sentiment"
    assert [m["role"] for m in items[0].messages] == ["system", "user"]
    assert items[0].text == "$TSLA recalls cars"  # the post, for reports
    assert (items[0].gold_label, items[0].gold_score, items[0].gold_tickers) == ("negative", -0.5, ["TSLA"])
    assert items[1].gold_tickers == []


def test_text_task_from_non_sentiment_answers_and_mixed_gold_is_an_error(tmp_path):
    sql = {"messages": [{"role": "system", "content": "CREATE TABLE head (age INTEGER)"},
                        {"role": "user", "content": "How many heads are older than 56?"},
                        {"role": "assistant", "content": "SELECT COUNT(*) FROM head WHERE age > 56"}]}
    f = _write(tmp_path / "sql.jsonl", [sql, sql])
    _, task, _ = load_items(f)
    assert task == "text"
    mixed = _write(tmp_path / "mixed.jsonl", [_chat("up", None, "positive", 0.5), sql])
    with pytest.raises(DataError, match=r"mixed.jsonl:2: gold answer is not a valid sentiment answer"):
        load_items(mixed)
    _, task, _ = load_items(mixed, task="text")
    assert task == "text"


def test_completions_rows_and_errors(tmp_path):
    f = _write(tmp_path / "c.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    items, task, _ = load_items(f)
    assert task == "text" and items[0].messages == [{"role": "user", "content": "2+2="}] and items[0].gold_text == "4"
    bad = _write(tmp_path / "bad.jsonl", [{"text": "no label here"}])
    with pytest.raises(DataError, match="bad.jsonl:1: a labeled record needs 'label'"):
        load_items(bad)
    kinds = _write(tmp_path / "kinds.jsonl", [{"prompt": "a", "completion": "b"}, {"text": "x", "label": "neutral"}])
    with pytest.raises(DataError, match="kinds.jsonl:2: row is a labeled row"):
        load_items(kinds)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no test.jsonl"):
        resolve_data_file(tmp_path / "empty")


def test_limit_is_a_seeded_sample_in_file_order(tmp_path):
    f = _write(tmp_path / "v.jsonl", [{"id": str(i), "text": f"t{i}", "label": "neutral"} for i in range(50)])
    a, _, info = load_items(f, limit=10, seed=1)
    b, _, _ = load_items(f, limit=10, seed=1)
    c, _, _ = load_items(f, limit=10, seed=2)
    ids = [int(i.id) for i in a]
    assert ids == sorted(ids) and len(ids) == 10 and ids != list(range(10))
    assert [i.id for i in b] == [i.id for i in a] != [i.id for i in c]
    assert info["n"] == 10 and info["rows"] == 50


def test_score_answers_sentiment_counts_unparsable_as_wrong(tmp_path):
    f = _write(tmp_path / "v.jsonl", [
        {"id": "1", "text": "$A up", "label": "positive", "tickers": ["A"]},
        {"id": "2", "text": "$B down", "label": "negative", "tickers": ["B"]},
        {"id": "3", "text": "meh", "label": "neutral", "tickers": []},
    ])
    items, task, _ = load_items(f)
    answers = [format_answer("A", "positive", 0.6, "up"), "It is negative.", format_answer(None, "neutral", 0.0)]
    metrics, per_item = score_answers(items, answers, task, metric_specs=["exact"])
    assert isinstance(metrics, SentimentMetrics)
    assert metrics.accuracy == pytest.approx(2 / 3) and metrics.invalid == 1
    assert [p["correct"] for p in per_item] == [True, False, True]
    assert per_item[1]["label"] == "invalid" and per_item[1]["error"] == "not JSON"
    assert metrics.tickers is not None and metrics.tickers.model_dump() == {
        "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "tp": 1, "fp": 0, "fn": 1}
    assert metrics.scores is None  # no gold scores in this data
    assert metrics.text == {"exact": {"mean": 0.0}}


def test_score_answers_text_task_with_metrics(tmp_path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("q1", "SELECT a FROM t"), ("q2", "SELECT b FROM t")]]
    items, task, _ = load_items(_write(tmp_path / "t.jsonl", rows))
    metrics, per_item = score_answers(items, ["select a from t;", "Answer: SELECT b FROM t"], task,
                                      ["exact", "tickerpulse.evaluate.metrics:sql_exact_match"], regex=r"Answer:\s*(.*)")
    assert isinstance(metrics, TextMetrics) and metrics.n == 2 and metrics.text is not None
    assert metrics.text["exact"] == {"mean": 0.0}
    assert metrics.text["tickerpulse.evaluate.metrics:sql_exact_match"] == {"mean": 0.5}
    assert metrics.text["regex"] == {"mean": 0.5, "pattern": r"Answer:\s*(.*)"}
    assert per_item[1]["text_metrics"]["regex"] is True


def test_config_rejects_bad_metric_and_regex():
    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        build(EvalConfig, {"model": "m", "data": "d", "metrics": ["bleu"]})
    with pytest.raises(ConfigError, match="not a valid pattern"):
        build(EvalConfig, {"model": "m", "data": "d", "regex": "("})


def test_latency_metrics_and_write_eval(tmp_path):
    run = LabelerRun([Answer("a", 10, 1.0, "stop"), Answer("b", 30, 3.0, "length")], wall_s=4.0)
    lm = latency_metrics(run)
    assert lm.tokens_per_s == 10.0 and lm.latency_mean_s == 2.0 and lm.hit_max_tokens == 1
    result = EvalResult(name="x", config={"model": "m", "max_tokens": 8}, data={"path": "d.jsonl", "n": 2, "rows": 2},
                        metrics=TextMetrics(n=2, latency=lm), items=[])
    write_eval(result, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["metrics"]["tokens_per_s"] == 10.0
    assert EvalResult.load(tmp_path / "out") == result  # eval.json loads back into the same result
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "| generated tokens/s | 10.000 |" in md
    # a run without generated tokens (served fast mode, a baseline) reports latency, not tokens/s
    lm = latency_metrics(LabelerRun([Answer("x", latency=0.5), Answer("y", latency=0.5)], wall_s=0.5))
    assert lm.tokens_per_s is None and lm.items_per_s == 4.0 and lm.latency_p95_s == 0.5
    assert "tokens_per_s" not in lm.model_dump()  # left out of eval.json, not written as null


def test_config_modes_and_url():
    assert build(EvalConfig, {"url": "http://h:1", "mode": "fast", "data": "d"}).model is None
    with pytest.raises(ConfigError, match="--model is required"):
        build(EvalConfig, {"data": "d"})
    with pytest.raises(ConfigError, match="--mode fast or reasoning"):
        build(EvalConfig, {"url": "http://h:1", "data": "d"})
    with pytest.raises(ConfigError, match="no --model"):
        build(EvalConfig, {"url": "http://h:1", "mode": "fast", "model": "m", "data": "d"})
