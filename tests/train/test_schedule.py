"""Learning-rate schedules follow mlx-lm: update k uses lr(k); warmup joins at step warmup + 1; every
`mlx.optimizers.schedulers` name with its positional arguments, checked against mlx-lm's own build_schedule."""

from __future__ import annotations

import math

import pytest

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig
from tickerpulse.train.schedule import build_schedule


def cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate(kw)


# (lr_schedule, steps probed): every mlx scheduler, with and without warmup
MLX_SCHEDULES = [
    {"name": "cosine_decay", "warmup": 100, "warmup_init": 1e-7, "arguments": [1e-5, 1000, 1e-7]},  # mlx-lm example
    {"name": "cosine_decay", "arguments": [2e-4, 50]},
    {"name": "linear_schedule", "arguments": [1e-3, 1e-5, 40]},
    {"name": "linear_schedule", "warmup": 5, "arguments": [1e-3, 0.0, 40]},
    {"name": "exponential_decay", "arguments": [1e-3, 0.97]},
    {"name": "exponential_decay", "warmup": 10, "warmup_init": 1e-6, "arguments": [1e-3, 0.9]},
    {"name": "step_decay", "arguments": [1e-3, 0.5, 7]},
    {"name": "step_decay", "warmup": 3, "arguments": [5e-4, 0.9, 2]},
]
PROBES = [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 25, 50, 99, 100, 101, 102, 600, 1100, 2000]


@pytest.mark.parametrize("sched", MLX_SCHEDULES, ids=lambda s: f"{s['name']}-w{s.get('warmup', 0)}")
def test_every_mlx_schedule_matches_mlx_lm_build_schedule(sched):
    pytest.importorskip("mlx_lm", reason="mlx-lm (the reference) is not installed: pip install 'tickerpulse[mlx]'")
    import mlx.core as mx
    from mlx_lm.tuner.utils import build_schedule as mlx_build

    ours = build_schedule(cfg(lr_schedule=sched), 1000)
    ref = mlx_build(dict(sched))
    for k in PROBES:
        assert ours(k) == pytest.approx(float(ref(mx.array(k))), rel=1e-5, abs=1e-9), (sched["name"], k)


def test_join_schedules_matches_mlx_join_schedules():
    pytest.importorskip("mlx_lm", reason="mlx-lm (the reference) is not installed")
    import mlx.core as mx
    import mlx.optimizers as optim

    sched = {"name": "join_schedules", "warmup": 4, "arguments": [
        [{"name": "linear_schedule", "arguments": [1e-4, 1e-3, 10]},
         {"name": "cosine_decay", "arguments": [1e-3, 100, 1e-5]},
         {"name": "exponential_decay", "arguments": [1e-5, 0.99]}],
        [10, 110]]}
    ours = build_schedule(cfg(lr_schedule=sched), 500)
    main = optim.join_schedules([optim.linear_schedule(1e-4, 1e-3, 10), optim.cosine_decay(1e-3, 100, 1e-5),
                                 optim.exponential_decay(1e-5, 0.99)], [10, 110])
    ref = optim.join_schedules([optim.linear_schedule(0.0, 1e-4, 4), main], [5])  # warmup to the first's init
    for k in [0, 2, 4, 5, 6, 14, 15, 16, 60, 114, 115, 116, 300]:
        assert ours(k) == pytest.approx(float(ref(mx.array(k))), rel=1e-5, abs=1e-9), k


def test_constant_without_schedule():
    lr = build_schedule(cfg(learning_rate=3e-4), 100)
    assert [lr(k) for k in (0, 50, 99)] == [3e-4] * 3


def test_mlx_cosine_with_warmup_values():
    # the mlx-lm example: warmup 100 from 1e-7, cosine [1e-5, 1000, 1e-7] (mlx 0.32: end + (init - end) * decay)
    c = cfg(lr_schedule={"name": "cosine_decay", "warmup": 100, "warmup_init": 1e-7, "arguments": [1e-5, 1000, 1e-7]})
    lr = build_schedule(c, 1000)
    assert lr(0) == pytest.approx(1e-7)
    assert lr(50) == pytest.approx(1e-7 + (1e-5 - 1e-7) * 0.5)
    assert lr(100) == pytest.approx(1e-5)  # end of warmup
    assert lr(101) == pytest.approx(1e-5)  # cosine(0)
    assert lr(101 + 500) == pytest.approx(1e-7 + (1e-5 - 1e-7) * 0.5)
    assert lr(101 + 5000) == pytest.approx(1e-7)  # constant after decay_steps


def test_short_names_fill_arguments_from_the_run():
    lr = build_schedule(cfg(learning_rate=1e-3, lr_schedule={"name": "cosine"}, warmup_steps=10), 110)
    assert lr(0) == 0.0 and lr(10) == pytest.approx(1e-3)
    assert lr(11 + 50) == pytest.approx(0.5e-3)  # halfway through the 100 steps left
    lin = build_schedule(cfg(learning_rate=2e-4, lr_schedule={"name": "linear"}), 100)
    assert lin(0) == pytest.approx(2e-4) and lin(50) == pytest.approx(1e-4) and lin(100) == 0.0


def test_adafactor_relative_step_ignores_the_learning_rate_as_mlx_does():
    # torch's Adafactor steps min(lr, 1/sqrt(t)); mlx's relative step is min(1e-2, 1/sqrt(t)) (1e-6 t with warmup_init)
    c = cfg(optimizer="adafactor", learning_rate=5e-5, lr_schedule={"name": "cosine_decay", "arguments": [5e-5, 10]})
    assert [build_schedule(c, 10)(k) for k in (0, 5, 9)] == [1e-2] * 3
    w = cfg(optimizer="adafactor", optimizer_config={"adafactor": {"warmup_init": True}})
    assert build_schedule(w, 10)(0) == pytest.approx(1e-6) and build_schedule(w, 10)(9) == pytest.approx(1e-5)
    fixed = cfg(optimizer="adafactor", learning_rate=5e-5, optimizer_config={"adafactor": {"relative_step": False}})
    assert build_schedule(fixed, 10)(3) == 5e-5


@pytest.mark.parametrize(("sched", "needle"), [
    ({"name": "cosine_decay", "arguments": [1e-4, 0]}, "decay_steps"),
    ({"name": "step_decay", "arguments": [1e-4, 0.5, 0]}, "step_size"),
])
def test_bad_schedule_arguments_are_config_errors(sched, needle):
    with pytest.raises(ConfigError, match=needle):
        build_schedule(cfg(lr_schedule=sched), 10)


@pytest.mark.parametrize(("sched", "needle"), [
    ({"name": "exponential_decay", "arguments": [1e-4]}, "decay_rate"),
    ({"name": "step_decay", "arguments": [1e-4, 0.5, 3, 4]}, "step_size"),
    ({"name": "cosine_decay", "arguments": ["1e-4", 10]}, "numbers"),
    ({"name": "join_schedules", "arguments": [[{"name": "cosine_decay", "arguments": [1e-4, 10]}], [5]]}, "boundary"),
    ({"name": "join_schedules", "arguments": [[{"name": "nope"}, {"name": "step_decay"}], [5]]}, "unknown schedule"),
    ({"name": "join_schedules", "arguments": [[{"name": "linear_schedule", "arguments": [1e-4]},
                                               {"name": "cosine_decay", "arguments": [1e-4, 10]}], [5]]}, "needs"),
    ({"name": "warmup_cosine", "arguments": []}, "lr_schedule.name"),
])
def test_malformed_schedules_are_refused_when_the_config_loads(sched, needle):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=needle):
        cfg(lr_schedule=sched)


def test_time_budget_moves_the_schedule_by_whichever_is_further_along():
    from tickerpulse.train.loop import schedule_position

    assert schedule_position(30, 999.0, 100, None) == 30  # no budget: steps only
    assert schedule_position(30, 10.0, 100, 100.0) == 30  # steps ahead of time
    assert schedule_position(30, 50.0, 100, 100.0) == pytest.approx(50.0)  # half the time spent: mid-schedule
    assert schedule_position(30, 500.0, 100, 100.0) == 100  # past the budget: the schedule's end
    lr = build_schedule(cfg(learning_rate=1e-3, lr_schedule={"name": "cosine"}, warmup_steps=10), 110)
    # 60% of the time spent = position 66 = 55 of the 100 cosine steps; fractional positions are valid inputs
    assert lr(schedule_position(11, 60.0, 110, 100.0)) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.55)))


def test_a_schedule_that_overflows_is_a_config_error_at_that_step():
    lr = build_schedule(cfg(lr_schedule={"name": "exponential_decay", "arguments": [1e-3, 1e300]}), 100)
    assert lr(0) == 1e-3
    with pytest.raises(ConfigError, match="learning rate at step 2 is inf"):
        lr(2)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="decay_rate must be > 0"):
        cfg(lr_schedule={"name": "step_decay", "arguments": [1e-3, -0.5, 2]})
    with pytest.raises(ValidationError, match="finite numbers"):
        cfg(lr_schedule={"name": "cosine_decay", "arguments": [float("nan"), 10]})
