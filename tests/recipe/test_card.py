"""The card is computed from the eval outputs on disk: change an eval.json and the card follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Answer, LabelerRun
from tickerpulse.evaluate.runner import score_run, write_eval
from tickerpulse.recipe.card import FAST, REASON, build_card, card_markdown, headline_markdown
from tickerpulse.recipe.config import RecipeConfig

GOLD = ["positive", "negative", "neutral", "neutral", "positive"]
SCORES = [0.6, -0.5, 0.0, 0.05, 0.3]


def _items() -> list[EvalItem]:
    return [EvalItem(id=f"i{k}", messages=[], gold_label=g, gold_score=s, gold_tickers=[], text=f"post {k}")
            for k, (g, s) in enumerate(zip(GOLD, SCORES))]


def _answers(texts: list[str]) -> LabelerRun:
    return LabelerRun([Answer(t, latency=0.01) for t in texts], wall_s=0.05)


def _write_run(out: Path, fast_labels: list[str]) -> None:
    items = _items()
    for ds in ("tfns", "fpb", "fiqa"):
        vader = LabelerRun([Answer("positive", score=0.1) for _ in items], wall_s=0.01, label_only=True)
        write_eval(score_run("VADER", items, vader), out / "eval" / ds / "vader")
        texts = [json.dumps({"ticker": None, "sentiment": lab, "score": {"positive": 0.5, "negative": -0.5}.get(lab, 0.0),
                             "reasoning": ""}) for lab in fast_labels]
        write_eval(score_run(FAST, items, _answers(texts)), out / "eval" / ds / "student-fast")
    (out / "run").mkdir(parents=True)
    (out / "run" / "summary.json").write_text(json.dumps({"status": "finished", "tokens_per_sec": 321.0, "step": 10,
                                                           "total_steps": 10, "best_step": 10}))
    (out / "timings.json").write_text(json.dumps({"train": 60.0, "total_before_card": 120.0}))
    (out / "data").mkdir()
    (out / "data" / "stats.json").write_text(json.dumps({"tfns": {"train": {"rows": 5, "labels": {"neutral": 5}}}}))
    (out / "calibration.json").write_text(json.dumps({"temperature": 2.0, "objective": "score_mae", "value": 0.2, "n": 5}))
    (out / "injection.json").write_text(json.dumps({"n": 4, "systems": {FAST: {"flip_rate": 0.25, "obeyed_rate": 0.25, "flips": 1}}}))


def test_card_numbers_come_from_the_eval_files(tmp_path: Path) -> None:
    _write_run(tmp_path, ["positive", "negative", "neutral", "positive", "positive"])
    card = build_card(tmp_path, RecipeConfig())
    row = card["results"]["tfns"][FAST]
    assert row["accuracy"] == pytest.approx(4 / 5) and row["schema_valid"] == 1.0
    assert row["recall"]["neutral"] == pytest.approx(0.5)
    assert card["results"]["fiqa"][FAST]["score_mae"] == pytest.approx(sum(abs(a - b) for a, b in zip(SCORES, [0.5, -0.5, 0.0, 0.5, 0.5])) / 5)
    targets = {t["key"]: t for t in card["targets"][FAST]}
    assert targets["tfns_accuracy"]["value"] == pytest.approx(0.8)
    assert not targets["tfns_accuracy"]["met"] and targets["tfns_accuracy"]["miss_by"] == pytest.approx(0.08)
    assert targets["schema_valid"]["met"]
    assert targets["injection_flip"]["value"] == 0.25 and not targets["injection_flip"]["met"]
    assert card["train"]["tokens_per_sec"] == 321.0 and card["wall_time_s"] == 120.0
    assert "80.0% ❌ missed by 8.0 pt" in headline_markdown(card)
    assert "| student fast | 5 | 80.0% |" in card_markdown(card)

    # rewrite one eval output: the card follows (nothing is cached or copied)
    _write_run(tmp_path / "again", GOLD)
    card2 = build_card(tmp_path / "again", RecipeConfig())
    t2 = {t["key"]: t for t in card2["targets"][FAST]}
    assert t2["tfns_accuracy"]["value"] == 1.0 and t2["tfns_accuracy"]["met"] and t2["tfns_accuracy"]["miss_by"] == 0.0


def test_a_sampled_column_shows_fast_mode_on_the_same_items(tmp_path: Path) -> None:
    _write_run(tmp_path, ["positive", "negative", "neutral", "positive", "negative"])  # fast: 3 of 5 right
    sample = _items()[:2]  # the two items fast mode gets right: an easy sample
    texts = [json.dumps({"ticker": None, "sentiment": g, "score": s, "reasoning": ""})
             for g, s in zip(GOLD[:2], SCORES[:2])]
    for ds in ("tfns", "fpb", "fiqa"):
        write_eval(score_run(REASON, sample, _answers(texts), data={"n": 2}), tmp_path / "eval" / ds / "student-reasoning")
    card = build_card(tmp_path, RecipeConfig())
    t = {x["key"]: x for x in card["targets"][REASON]}
    assert t["tfns_accuracy"]["value"] == 1.0 and t["tfns_accuracy"]["fast_same_items"] == 1.0
    assert t["fiqa_mae"]["fast_same_items"] == pytest.approx((abs(0.6 - 0.5) + abs(-0.5 + 0.5)) / 2)
    assert "100.0% (n=2; fast mode on these items: 100.0%) ✅ met" in headline_markdown(card)


def test_small_miss_is_not_printed_as_zero() -> None:
    from tickerpulse.recipe.card import _fmt_target

    t = {"key": "tfns_macro_f1", "value": 0.8497, "met": False, "miss_by": 0.0003}
    assert _fmt_target(t).endswith("missed by 0.03 pt")
    assert _fmt_target({**t, "miss_by": 0.026}).endswith("missed by 2.6 pt")
