"""Learning-rate schedules with mlx-lm semantics, as pure functions of the update index.

The k-th optimizer update (k = 0, 1, ...) uses `lr(k)`, as mlx optimizers evaluate their schedule at the
pre-increment step. `lr_schedule.name` is the `mlx.optimizers.schedulers` function and `arguments` its
positional arguments (mlx 0.32 formulas):

- cosine_decay(init, decay_steps, end=0): `end + (init - end) * 0.5 * (1 + cos(pi * min(k, decay_steps) / decay_steps))`
- linear_schedule(init, end, steps): `init + (end - init) * min(k, steps) / steps`
- exponential_decay(init, decay_rate): `init * decay_rate ** k`
- step_decay(init, decay_rate, step_size): `init * decay_rate ** (k // step_size)`
- join_schedules([schedules], [boundaries]): schedule i+1 from boundary i on, counting from 0 there; in YAML
  each schedule is `{name, arguments}` (mlx-lm itself cannot build this one from a config: it needs callables)

mlx-lm's `build_schedule` joins a linear warmup from `warmup_init` to the schedule's first argument over
`warmup` steps with the main schedule, which starts at step `warmup + 1` (join_schedules: warmup ends at the
first schedule's initial value).

Ours besides: `constant` [lr]; `cosine` / `linear`, and cosine_decay / linear_schedule given fewer arguments,
fill the missing ones from the run: init = `learning_rate`, the decay runs over the steps left after warmup and
ends at 0. `warmup_steps` overrides `lr_schedule.warmup`. Adafactor with `relative_step` (mlx's default)
ignores the learning rate as mlx does: its schedule is min(1e-2, 1/sqrt(t)) inside the optimizer, which here
means an lr cap of 1e-2 (`1e-6 * t` with `warmup_init`). Because the schedule is a pure function, resuming needs
only the step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig

Schedule = Callable[[float], float]  # a time-budgeted run asks at fractional positions


def cosine_decay(init: float, decay_steps: int, end: float = 0.0) -> Schedule:
    if decay_steps < 1:
        raise ConfigError(f"lr_schedule: cosine decay_steps must be >= 1, got {decay_steps}")

    def lr(k: float) -> float:
        s = min(k, decay_steps)
        return end + (init - end) * 0.5 * (1.0 + math.cos(math.pi * s / decay_steps))

    return lr


def linear_schedule(init: float, end: float, steps: int) -> Schedule:
    if steps < 1:
        raise ConfigError(f"lr_schedule: linear steps must be >= 1, got {steps}")

    def lr(k: float) -> float:
        return init + (end - init) * min(k, steps) / steps

    return lr


def exponential_decay(init: float, decay_rate: float) -> Schedule:
    return lambda k: init * decay_rate**k


def step_decay(init: float, decay_rate: float, step_size: int) -> Schedule:
    if step_size < 1:
        raise ConfigError(f"lr_schedule: step_decay step_size must be >= 1, got {step_size}")
    return lambda k: init * decay_rate ** (k // step_size)


def join(first: Schedule, then: Schedule, boundary: int) -> Schedule:
    """`first` before `boundary`, then `then(k - boundary)` (mlx `join_schedules`)."""
    return lambda k: first(k) if k < boundary else then(k - boundary)


def _named(name: str, args: list[Any], cfg: TrainConfig, remaining: int) -> tuple[Schedule, float]:
    """(schedule, its initial value) for one mlx schedule name and its arguments."""
    if name == "cosine_decay":
        init, decay, end = (list(args) + [None, None, None])[:3]
        init = cfg.learning_rate if init is None else init
        return cosine_decay(init, int(decay) if decay is not None else remaining, end or 0.0), init
    if name == "linear_schedule":
        init, end, steps = (list(args) + [None, None, None])[:3]
        init = cfg.learning_rate if init is None else init
        return linear_schedule(init, 0.0 if end is None else end, int(steps) if steps is not None else remaining), init
    if name == "exponential_decay":
        return exponential_decay(args[0], args[1]), args[0]
    if name == "step_decay":
        return step_decay(args[0], args[1], int(args[2])), args[0]
    if name == "join_schedules":
        subs = [_named(s["name"], s.get("arguments", []), cfg, remaining) for s in args[0]]
        return join_schedules([s for s, _ in subs], list(args[1])), subs[0][1]
    # constant
    init = args[0] if args else cfg.learning_rate
    return (lambda k: init), init


def join_schedules(schedules: list[Schedule], boundaries: list[int]) -> Schedule:
    """mlx's join_schedules exactly: every boundary is an absolute step; schedule i+1 gets `k - boundary_i`."""

    def lr(k: float) -> float:
        out = schedules[0](k)
        for boundary, sched in zip(boundaries, schedules[1:], strict=True):
            if k >= boundary:
                out = sched(k - boundary)
        return out

    return lr


def build_schedule(cfg: TrainConfig, total_steps: int) -> Schedule:
    """The lr schedule of a run (see the module docstring)."""
    if cfg.optimizer == "adafactor" and cfg.optimizer_config.adafactor.relative_step:
        # mlx's Adafactor ignores learning_rate then; torch's Adafactor takes min(lr, 1/sqrt(t)) (t = k + 1)
        if cfg.optimizer_config.adafactor.warmup_init:
            return lambda k: 1e-6 * (k + 1)
        return lambda k: 1e-2
    sched = cfg.lr_schedule
    if sched is None:
        warmup = cfg.warmup_steps or 0
        main: Schedule = lambda k: cfg.learning_rate  # noqa: E731
        init = cfg.learning_rate
        warmup_init = 0.0
    else:
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else sched.warmup
        warmup_init = sched.warmup_init
        name = {"cosine": "cosine_decay", "linear": "linear_schedule"}.get(sched.name, sched.name)
        main, init = _named(name, list(sched.arguments), cfg, max(1, total_steps - warmup))
    full = join(linear_schedule(warmup_init, init, warmup), main, warmup + 1) if warmup else main
    return _finite(full)


def _finite(sched: Schedule) -> Schedule:
    """A schedule that overflows (exponential growth, a huge step_decay rate) is a config error at the step
    where it happens, not an OverflowError or a silent inf/nan learning rate."""

    def lr(k: float) -> float:
        try:
            value = float(sched(k))
        except (OverflowError, ZeroDivisionError, TypeError):  # TypeError: a complex power
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"lr_schedule: the learning rate at step {k:g} is {value} (check its arguments)")
        return value

    return lr
