"""The recipe's wall-clock deadline: the training budget it derives from the measured throughput."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tickerpulse.recipe.config import load_recipe_config
from tickerpulse.recipe.sentiment import VALIDATION_SHARE, deadline_budget


def test_deadline_budget_reserves_the_later_stages_in_training_tokens():
    fit = deadline_budget(time.perf_counter() + 1000.0, post_train_tokens=200_000)
    fast, slow = fit(2000.0, 50.0), fit(1000.0, 50.0)
    # 100 s of reserve at 2,000 tokens/s, 200 s at half the speed: the slow machine trains 100 s less
    assert fast == pytest.approx(50 + (1000 - 100) / (1 + VALIDATION_SHARE), abs=0.5)
    assert slow == pytest.approx(50 + (1000 - 200) / (1 + VALIDATION_SHARE), abs=0.5)
    # past the deadline: no more steps than already spent (the loop then stops at once)
    assert deadline_budget(time.perf_counter() - 1.0, 1000)(100.0, 12.0) == 12.0


def test_shipped_recipe_has_a_wall_budget_under_the_45_minute_target():
    cfg = load_recipe_config(Path(__file__).resolve().parents[2] / "configs" / "recipe-sentiment.yaml")
    assert cfg.wall_budget is not None and cfg.wall_budget <= 45 * 60 - 60  # a minute for start-up and the card
    assert cfg.train.time_budget is None  # the wall budget decides the step time


def test_calibration_fits_the_score_temperature_on_real_scores_only(tmp_path):
    """FinEntity has labels only: its questions count for the label offsets with no score, so the temperature is
    fitted on FiQA's annotated scores alone; FiQA keeps its score."""
    from tickerpulse.data.finentity import target_records
    from tickerpulse.data.readers import read_records
    from tickerpulse.data.records import Record, Target
    from tickerpulse.recipe.sentiment import calibration_questions

    fiqa = Record("q1", "$AAPL jumps", "positive", "fiqa", score=0.42, tickers=["AAPL"], dataset="fiqa",
                  targets=[Target("AAPL", 0.42, "AAPL", "positive")])
    path = tmp_path / "finentity.jsonl"  # what the FinEntity reader makes of a paragraph
    path.write_text(json.dumps({"id": "p", "text": "Porsche shines",
                                "entities": [{"name": "Porsche", "start": 0, "end": 7, "label": "Positive"}]}) + "\n")
    [paragraph] = read_records(path, fmt="finentity")
    [ent] = target_records([paragraph])[0]
    ent.dataset = "finentity"
    tweet = Record("t1", "$MSFT flat", "neutral", "tfns", tickers=["MSFT"], dataset="tfns")
    qs = calibration_questions({"fiqa": {"valid": [fiqa]}, "finentity": {"valid": [ent]}, "tfns": {"valid": [tweet]}})
    by = {q.id: q for q in qs}
    assert len(qs) == 3 and by["q1"].score == 0.42 and by["q1"].target == "AAPL"
    assert by["p#0"].score is None and by["p#0"].label == "positive"
    assert by["p#0"].target == "Porsche" and by["t1"].score is None
