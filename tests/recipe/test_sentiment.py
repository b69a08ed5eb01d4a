"""The recipe's wall-clock deadline: the training budget it derives from the measured throughput."""

from __future__ import annotations

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
