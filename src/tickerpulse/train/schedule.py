"""Learning-rate schedules with mlx-lm semantics, as pure functions of the update index.

The k-th optimizer update (k = 0, 1, ...) uses `lr(k)`, as mlx optimizers evaluate their schedule at the
pre-increment step. mlx-lm's `build_schedule` joins a linear warmup from `warmup_init` to the initial lr over
`warmup` steps with the main schedule, which starts at step `warmup + 1`:

- cosine_decay(init, decay_steps, minimum=0): `max(init * 0.5 * (1 + cos(pi * min(k, decay_steps) / decay_steps)), minimum)`
- linear_schedule(init, end, steps): `init + (end - init) * min(k, steps) / steps`
- constant: `learning_rate`

Our short names `cosine` / `linear` fill missing arguments from the run: init = `learning_rate`, the decay runs
over the steps left after warmup and ends at 0. Because the schedule is a pure function, resuming needs only
the step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig

Schedule = Callable[[float], float]  # a time-budgeted run asks at fractional positions


def cosine_decay(init: float, decay_steps: int, minimum: float = 0.0) -> Schedule:
    if decay_steps < 1:
        raise ConfigError(f"lr_schedule: cosine decay_steps must be >= 1, got {decay_steps}")

    def lr(k: float) -> float:
        s = min(k, decay_steps)
        return max(init * 0.5 * (1.0 + math.cos(math.pi * s / decay_steps)), minimum)

    return lr


def linear_schedule(init: float, end: float, steps: int) -> Schedule:
    if steps < 1:
        raise ConfigError(f"lr_schedule: linear steps must be >= 1, got {steps}")

    def lr(k: float) -> float:
        return init + (end - init) * min(k, steps) / steps

    return lr


def join(first: Schedule, then: Schedule, boundary: int) -> Schedule:
    """`first` before `boundary`, then `then(k - boundary)` (mlx `join_schedules`)."""
    return lambda k: first(k) if k < boundary else then(k - boundary)


def build_schedule(cfg: TrainConfig, total_steps: int) -> Schedule:
    """The lr schedule of a run (see the module docstring)."""
    sched = cfg.lr_schedule
    if sched is None:
        warmup = cfg.warmup_steps or 0
        main: Schedule = lambda k: cfg.learning_rate  # noqa: E731
        init = cfg.learning_rate
        warmup_init = 0.0
    else:
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else sched.warmup
        warmup_init = sched.warmup_init
        args = list(sched.arguments)
        name = {"cosine": "cosine_decay", "linear": "linear_schedule"}.get(sched.name, sched.name)
        remaining = max(1, total_steps - warmup)
        if name == "cosine_decay":
            init, decay, end = (args + [None, None, None])[:3]
            init = cfg.learning_rate if init is None else init
            main = cosine_decay(init, int(decay) if decay is not None else remaining, end or 0.0)
        elif name == "linear_schedule":
            init, end, steps = (args + [None, None, None])[:3]
            init = cfg.learning_rate if init is None else init
            main = linear_schedule(init, 0.0 if end is None else end, int(steps) if steps is not None else remaining)
        else:  # constant
            init = args[0] if args else cfg.learning_rate
            main = lambda k: init  # noqa: E731
    if warmup:
        return join(linear_schedule(warmup_init, init, warmup), main, warmup + 1)
    return main
