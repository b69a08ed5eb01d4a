"""Learning-rate schedules follow mlx-lm: update k uses lr(k); warmup joins at step warmup + 1."""

from __future__ import annotations

import math

import pytest

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig
from tickerpulse.train.schedule import build_schedule


def cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate(kw)


def test_constant_without_schedule():
    lr = build_schedule(cfg(learning_rate=3e-4), 100)
    assert [lr(k) for k in (0, 50, 99)] == [3e-4] * 3


def test_mlx_cosine_with_warmup():
    # the mlx-lm example: warmup 100 from 1e-7, cosine [1e-5, 1000, 1e-7]
    c = cfg(lr_schedule={"name": "cosine_decay", "warmup": 100, "warmup_init": 1e-7, "arguments": [1e-5, 1000, 1e-7]})
    lr = build_schedule(c, 1000)
    assert lr(0) == pytest.approx(1e-7)
    assert lr(50) == pytest.approx(1e-7 + (1e-5 - 1e-7) * 0.5)
    assert lr(100) == pytest.approx(1e-5)  # end of warmup
    assert lr(101) == pytest.approx(1e-5)  # cosine(0)
    assert lr(101 + 500) == pytest.approx(max(1e-5 * 0.5 * (1 + math.cos(math.pi * 0.5)), 1e-7))
    assert lr(101 + 5000) == pytest.approx(1e-7)  # clamped at the minimum


def test_short_names_fill_arguments_from_the_run():
    lr = build_schedule(cfg(learning_rate=1e-3, lr_schedule={"name": "cosine"}, warmup_steps=10), 110)
    assert lr(0) == 0.0 and lr(10) == pytest.approx(1e-3)
    assert lr(11 + 50) == pytest.approx(0.5e-3)  # halfway through the 100 steps left
    lin = build_schedule(cfg(learning_rate=2e-4, lr_schedule={"name": "linear"}), 100)
    assert lin(0) == pytest.approx(2e-4) and lin(50) == pytest.approx(1e-4) and lin(100) == 0.0


def test_bad_schedule_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="decay_steps"):
        build_schedule(cfg(lr_schedule={"name": "cosine_decay", "arguments": [1e-4, 0]}), 10)


def test_time_budget_moves_the_schedule_by_whichever_is_further_along():
    from tickerpulse.train.loop import schedule_position

    assert schedule_position(30, 999.0, 100, None) == 30  # no budget: steps only
    assert schedule_position(30, 10.0, 100, 100.0) == 30  # steps ahead of time
    assert schedule_position(30, 50.0, 100, 100.0) == pytest.approx(50.0)  # half the time spent: mid-schedule
    assert schedule_position(30, 500.0, 100, 100.0) == 100  # past the budget: the schedule's end
    lr = build_schedule(cfg(learning_rate=1e-3, lr_schedule={"name": "cosine"}, warmup_steps=10), 110)
    # 60% of the time spent = position 66 = 55 of the 100 cosine steps; fractional positions are valid inputs
    assert lr(schedule_position(11, 60.0, 110, 100.0)) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.55)))
