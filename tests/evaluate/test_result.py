"""The typed eval result: eval.json keeps its flat layout (files written before the metrics were typed load
and dump back byte for byte), readers get attributes, and any answers round-trip through eval.json."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tickerpulse.config import ConfigError
from tickerpulse.evaluate import metrics as M
from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Answer, LabelerRun
from tickerpulse.evaluate.result import EvalResult, SentimentMetrics, TextMetrics
from tickerpulse.evaluate.runner import score_run, write_eval
from tickerpulse.task.contract import LABELS, format_answer

GOLD = [("positive", 0.6, ["AAPL"]), ("negative", -0.5, ["BAD"]), ("neutral", 0.0, [])]
ITEMS = [EvalItem(id=f"i{k}", messages=[], gold_label=lab, gold_score=s, gold_tickers=t, text=f"post {k}")
         for k, (lab, s, t) in enumerate(GOLD)]
ANSWERS = [format_answer("AAPL", "positive", 0.5, "beat"), "It is negative.", '{"sentiment": "neutral"}']

# The layout eval.json has had since schema version 1 (what the untyped runner wrote): flat, in this order.
SENTIMENT_KEYS = ["task", "n", "json_valid", "json_found", "schema_valid", "accuracy", "macro_f1", "per_class",
                  "invalid", "confusion", "accuracy_lenient", "macro_f1_lenient", "scores", "tickers", "text",
                  "latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_max_s", "generated_tokens",
                  "mean_answer_tokens", "hit_max_tokens", "tokens_per_s", "items_per_s", "wall_s", "peak_memory_mb",
                  "agreement_with_fast"]
LABEL_ONLY_KEYS = ["task", "n", "accuracy", "macro_f1", "per_class", "invalid", "confusion", "scores",
                   "latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_max_s", "items_per_s", "wall_s",
                   "peak_memory_mb"]
ITEM_KEYS = ["id", "text", "gold", "gold_label", "gold_score", "gold_tickers", "prediction", "json_valid",
             "json_found", "schema_valid", "label", "label_lenient", "score", "ticker", "error", "correct",
             "text_metrics", "n_tokens", "latency_s", "finish_reason"]


def _run(texts: list[str]) -> LabelerRun:
    return LabelerRun([Answer(t, 12, 0.25, "length" if k == 1 else "stop") for k, t in enumerate(texts)], wall_s=0.5,
                      peak_memory_mb=100.0)


def test_eval_json_keeps_the_flat_layout_and_loads_back_byte_for_byte(tmp_path):
    res = score_run("student fast", ITEMS, _run(ANSWERS), metric_specs=["contains"])
    res.sentiment.agreement_with["fast"] = 0.5
    write_eval(res, tmp_path / "gen")
    labels = LabelerRun([Answer("neutral", latency=0.1, score=0.0) for _ in ITEMS], wall_s=0.1, label_only=True)
    write_eval(score_run("majority", ITEMS, labels), tmp_path / "maj")
    text_items = [EvalItem(id="q", messages=[], gold_text="SELECT 1", text="q")]
    write_eval(score_run("sql", text_items, _run(["select 1"]), "text", regex=r"(.*)"), tmp_path / "txt")

    gen, maj, txt = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("gen", "maj", "txt"))
    assert list(gen["metrics"]) == SENTIMENT_KEYS and list(gen["items"][0]) == ITEM_KEYS
    assert list(maj["metrics"]) == LABEL_ONLY_KEYS
    assert list(maj["items"][0]) == ["id", "text", "gold", "gold_label", "gold_score", "gold_tickers", "prediction",
                                     "label", "score", "correct", "n_tokens", "latency_s", "finish_reason"]
    assert list(txt["metrics"])[:3] == ["task", "text", "n"]
    assert txt["metrics"]["text"] == {"regex": {"mean": 0.0, "pattern": "(.*)"}}
    assert txt["items"][0]["text_metrics"] == {"regex": False}
    for d in ("gen", "maj", "txt"):
        path = tmp_path / d / "eval.json"
        assert EvalResult.load(path).to_json() == path.read_text()


def test_a_result_in_the_untyped_layout_loads_into_the_types():
    """An eval.json as the runner wrote it before the types: metric dicts composed from the pure functions."""
    parsed = [M.parse_prediction(t) for t in ANSWERS]
    gold = [g for g, _, _ in GOLD]
    latency = {"latency_mean_s": 0.25, "latency_p50_s": 0.25, "latency_p95_s": 0.25, "latency_max_s": 0.25,
               "generated_tokens": 36, "mean_answer_tokens": 12.0, "hit_max_tokens": 1, "tokens_per_s": 72.0,
               "items_per_s": 6.0, "wall_s": 0.5, "peak_memory_mb": 100.0}
    metrics = {"task": "sentiment", **M.sentiment_metrics(gold, parsed, [s for _, s, _ in GOLD], [t for *_, t in GOLD]),
               **latency, "agreement_with_fast": 1.0}
    items = [{"id": it.id, "text": it.text, "gold": None, "gold_label": it.gold_label, "gold_score": it.gold_score,
              "gold_tickers": it.gold_tickers, "prediction": a, **p.to_dict(), "correct": p.label == it.gold_label,
              "n_tokens": 12, "latency_s": 0.25, "finish_reason": "stop"} for it, a, p in zip(ITEMS, ANSWERS, parsed)]
    old = {"tickerpulse_eval": 1, "name": "student fast", "config": {"mode": "fast"}, "model": {}, "data": {"n": 3},
           "prompt": None, "command": "", "host": {}, "metrics": metrics, "items": items, "reused_from": None}
    res = EvalResult.model_validate(old)
    m = res.sentiment
    assert (m.n, m.invalid, m.accuracy) == (3, 2, pytest.approx(1 / 3))  # "neutral" without a score is invalid
    assert m.accuracy_lenient == pytest.approx(2 / 3)  # ... but its sentiment field counts for the lenient label
    assert m.per_class["positive"].recall == 1.0 and m.confusion.matrix[1] == [0, 0, 0, 1]
    assert m.scores is not None and m.scores.n == 3 and m.scores.n_imputed == 2
    assert m.tickers is not None and m.tickers.tp == 1 and m.json_valid == pytest.approx(2 / 3)
    assert m.latency.tokens_per_s == 72.0 and m.agreement_with == {"fast": 1.0} and m.text is None
    assert res.items[1].label == "invalid" and res.items[1].error == "not JSON" and res.items[0].ticker == "AAPL"
    assert res.labels_by_id == {"i0": "positive", "i1": "invalid", "i2": "invalid"}
    assert json.dumps(res.model_dump()) == json.dumps(old)  # same keys, same order, same values


def test_text_results_are_not_sentiment_and_typos_are_rejected():
    res = EvalResult(name="sql", metrics={"task": "text", "n": 1, "text": {"exact": {"mean": 1.0}}},
                     items=[{"id": "1", "prediction": "a", "gold": "a", "text_metrics": {"exact": True}}])
    assert isinstance(res.metrics, TextMetrics) and res.metrics.latency.items_per_s is None
    with pytest.raises(TypeError, match="measured a text task"):
        res.sentiment  # noqa: B018
    with pytest.raises(ValidationError, match="acuracy"):
        EvalResult(name="x", metrics={"task": "text", "n": 1, "acuracy": 0.5}, items=[])
    with pytest.raises(ValidationError):
        EvalResult(name="x", metrics={"task": "regression", "n": 1}, items=[])


def test_load_names_the_file_and_the_bad_field(tmp_path):
    bad = {"tickerpulse_eval": 1, "name": "x", "metrics": {"task": "text", "n": "many"}, "items": []}
    (tmp_path / "eval.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"eval.json is not a valid tickerpulse eval.json: metrics\.text\.n: Input "
                                          r"should be a valid integer"):
        EvalResult.load(tmp_path)


SIGN = {"negative": -0.5, "neutral": 0.0, "positive": 0.5}
ANSWER = st.one_of(
    st.builds(lambda t, lab, r: format_answer(t, lab, SIGN[lab], r),
              st.one_of(st.none(), st.sampled_from(["AAPL", "$X"])), st.sampled_from(LABELS), st.text(max_size=20)),
    st.text(max_size=40),
    st.builds(lambda lab, extra: json.dumps({"sentiment": lab, "score": extra}),
              st.sampled_from([*LABELS, "bullish"]), st.one_of(st.none(), st.floats(-5, 5), st.text(max_size=5))),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(ANSWER, min_size=3, max_size=3), st.booleans())
def test_any_answers_round_trip_through_eval_json(tmp_path_factory, answers, label_only):
    if label_only:
        run = LabelerRun([Answer(a[:10], latency=0.1, score=0.5) for a in answers], wall_s=0.3, label_only=True)
    else:
        run = _run(answers)
    res = score_run("s", ITEMS, run)
    out = write_eval(res, tmp_path_factory.mktemp("rt"))
    again = EvalResult.load(out)
    assert again == res and again.to_json() == res.to_json()
    assert isinstance(again.metrics, SentimentMetrics) and again.metrics.n == 3
    assert sum(it.correct or False for it in again.items) == round(again.metrics.accuracy * 3)
