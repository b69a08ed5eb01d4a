"""The training loop, written once for every backend: eval -> report -> save, with early stopping and a time budget.

A backend (`train/backends/torch_steps.py`, `train/backends/mlx.py`) supplies a `StepBackend`: one optimizer step,
one validation pass, and saving weights (plus its resume state); `run_loop` does everything else the same way
for all of them. Validation runs before the first step (the base model's loss; not when resuming), every
`steps_per_eval` steps and at the end; the best value of `early_stopping_metric` so far is saved at once as the
best adapter; `early_stopping_patience` evaluations without an improvement of more than
`early_stopping_min_delta` end the run. Every `save_every` steps (and at the end, or on Ctrl-C) the backend saves
a checkpoint. The learning rate is a pure function of the step (or of the spent share of `time_budget`), so a
resumed run continues the same schedule. Without validation data the newest checkpoint is the result (mlx-lm).
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tickerpulse.train.config import BUDGET_FIT_STEP, BUDGET_WARMUP_STEPS, TrainConfig
from tickerpulse.train.report import Reporter
from tickerpulse.train.run_folder import BEST
from tickerpulse.train.schedule import build_schedule


@dataclass
class LoopState:
    """Everything besides weights and optimizer moments that a resumed run must continue from."""

    step: int = 0
    best_step: int | None = None
    best_val_loss: float = math.inf  # val loss at best_step
    best_metric: float = math.inf  # early_stopping_metric at best_step (= best_val_loss for "val_loss")
    bad_evals: int = 0
    first_val_loss: float | None = None
    last_val_loss: float | None = None
    train_tokens: int = 0  # tokens of the trained samples (a shared prefix counts once per sample)
    computed_tokens: int = 0  # non-pad positions run through forward+backward
    trained_tokens: int = 0  # tokens that carried a loss
    pad_tokens: int = 0
    train_time: float = 0.0
    fitted_budget: float | None = None  # the time budget `refit_budget` set (kept on resume)
    warm_tokens: int = 0  # train_tokens and train_time after BUDGET_WARMUP_STEPS: the budget fit's starting point
    warm_time: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # val records, for the summary

    @classmethod
    def restore(cls, saved: dict[str, Any], metric: str) -> LoopState:
        """The state saved in a checkpoint (keys it does not know are dropped)."""
        st = cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})
        if "best_metric" not in saved and metric == "val_loss":
            st.best_metric = st.best_val_loss  # a checkpoint from before the metric was recorded
        return st


@dataclass
class FitResult:
    state: LoopState
    status: str  # finished | time_budget | stopped_early | interrupted
    total_steps: int


@dataclass
class StepStats:
    """What one optimizer step (all its micro-batches) did."""

    loss: float  # mean (weighted) token loss
    weight: float  # the loss's weight sum (= trained_tokens unless token_weights are set)
    trained_tokens: int  # tokens that carried a loss
    tokens: int  # tokens of the step's samples
    grad_norm: float  # before clipping; nan without clipping
    computed_tokens: int = 0  # non-pad positions run (backends that do not count them leave 0)
    pad_tokens: int = 0


@dataclass
class ValLosses:
    """One evaluation: the (weighted) training loss and the loss of the `token_weights` positions alone."""

    loss: float  # mean token loss, weighted like training (`token_weights`)
    tokens: int | None  # trained tokens (None: the backend does not count them)
    weighted_token_loss: float = math.nan  # mean unweighted loss over the token_weights positions (nan without any)
    weighted_tokens: int = 0

    def metric(self, name: str) -> float:
        """The early-stopping metric `name` (TrainConfig.early_stopping_metric)."""
        return self.weighted_token_loss if name == "weighted_token_loss" else self.loss


class StepBackend(Protocol):
    """What a backend supplies to `run_loop`."""

    has_validation: bool  # False: no validation data, the newest checkpoint is the best adapter

    def step(self, step: int, lr: float) -> StepStats:
        """Optimizer step number `step` (0-based) at learning rate `lr`."""

    def validate(self) -> ValLosses:
        """Loss on the fixed validation batches, without dropout; leaves the model in training mode."""

    def save(self, meta: dict[str, Any], *, checkpoint: bool, best: bool) -> None:
        """Write the trainable weights as checkpoint `meta['step']` and/or as the best adapter."""

    def save_state(self, st: LoopState, *, interrupted: bool) -> None:
        """Write what an exact resume needs besides the weights (nothing where resume is unsupported)."""

    def epoch(self, step: int) -> float | None:
        """Epochs done after `step` steps (None: not reported)."""

    def peak_memory_mb(self) -> float: ...


BudgetFit = Callable[[float, float], float]
"""(tokens/s so far, step seconds spent) -> total seconds of steps the run may take."""


def schedule_position(step: int, train_time: float, steps: int, time_budget: float | None) -> float:
    """Where the lr schedule stands: the step count, or the spent share of `time_budget` in steps when that is
    further along (a time-budgeted run then still warms up by step and decays to its end value in time)."""
    if time_budget is None:
        return float(step)
    return max(float(step), min(train_time / time_budget, 1.0) * steps)


def out_of_time(st: LoopState, time_budget: float | None) -> bool:
    """Whether a time-budgeted run has spent its budget (seconds of steps, validation excluded)."""
    return time_budget is not None and st.train_time >= time_budget


def effective_budget(st: LoopState, cfg: TrainConfig) -> float | None:
    return st.fitted_budget if st.fitted_budget is not None else cfg.time_budget


def refit_budget(st: LoopState, cfg: TrainConfig, budget_fit: BudgetFit | None, reporter: Reporter) -> float | None:
    """At step BUDGET_FIT_STEP, let `budget_fit` shorten the time budget from the throughput measured since step
    BUDGET_WARMUP_STEPS; returns the budget in effect (`effective_budget`).

    A caller with a wall-clock deadline after training (the recipe's evaluation) cannot know the step budget
    in advance: on a machine half as fast, training AND the stages after it take twice as long. Only a
    shorter budget is taken (the configured one stays the cap); the lr schedule follows the new budget."""
    budget = effective_budget(st, cfg)
    if st.step == BUDGET_WARMUP_STEPS:
        st.warm_tokens, st.warm_time = st.train_tokens, st.train_time
    if budget_fit is None or st.step != BUDGET_FIT_STEP or st.train_time <= st.warm_time:
        return budget
    tok_s = (st.train_tokens - st.warm_tokens) / (st.train_time - st.warm_time)
    fitted = max(budget_fit(tok_s, st.train_time), st.train_time)
    if budget is not None and fitted >= budget:
        return budget
    st.fitted_budget = fitted
    reporter.event(f"time budget set to {fitted:.0f} s of steps from {tok_s:.0f} tokens/s at step {st.step} "
                   f"(was {f'{budget:g} s' if budget is not None else 'none'})", st.step)
    return fitted


def rss_mb() -> float:
    """Peak resident set size of this process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loop_summary(st: LoopState, cfg: TrainConfig, steps: int) -> dict[str, Any]:
    """summary.json's keys about the loop, the same for every backend."""
    return {
        "step": st.step,
        "total_steps": steps,
        "time_budget_s": effective_budget(st, cfg),
        "time_budget_fitted": st.fitted_budget is not None,
        "best_step": st.best_step,
        "best_val_loss": None if math.isinf(st.best_val_loss) else st.best_val_loss,
        "early_stopping_metric": cfg.early_stopping_metric,
        "best_metric": None if math.isinf(st.best_metric) else st.best_metric,
        "best_adapter": BEST,
        "first_val_loss": st.first_val_loss,
        "last_val_loss": st.last_val_loss,
        "stopped_early": st.stopped_early,
        "train_tokens": st.train_tokens,
        "trained_tokens": st.trained_tokens,
        "tokens_per_sec": st.train_tokens / st.train_time if st.train_time else None,
        "train_time_s": round(st.train_time, 2),
    }


class _Window:
    """Sums over the steps since the last train report."""

    def __init__(self) -> None:
        self.loss = self.weight = self.time = self.grad_norm = 0.0
        self.targets = self.tokens = self.steps = 0

    def add(self, s: StepStats, dt: float) -> None:
        self.loss += s.loss * s.weight
        self.weight += s.weight
        self.targets += s.trained_tokens
        self.tokens += s.tokens
        self.time += dt
        self.grad_norm += s.grad_norm
        self.steps += 1


def run_loop(
    backend: StepBackend,
    cfg: TrainConfig,
    reporter: Reporter,
    st: LoopState,
    *,
    steps: int,
    on_save: Callable[[LoopState, bool], None] | None = None,
    budget_fit: BudgetFit | None = None,
) -> FitResult:
    """Train for `steps` optimizer steps (or until early stopping / the time budget / Ctrl-C).

    Args:
        st: updated in place: a fresh `LoopState()` starts at step 0 with a validation of the untrained model;
            a resumed run passes its restored state (weights and optimizer already loaded by the backend).
        on_save: called after every evaluation (False) and checkpoint (True): the backend refreshes
            summary.json, and the loss plot at checkpoints.
        budget_fit: shortens `time_budget` once the throughput is known (`refit_budget`).
    """
    lr_at = build_schedule(cfg, steps)

    def validate() -> bool:
        """Evaluate, keep the best adapter, return True when early stopping says stop."""
        if not backend.has_validation:
            return False
        v = backend.validate()
        if not math.isfinite(v.loss):
            raise FloatingPointError(f"validation loss is {v.loss} at step {st.step}")
        metric = v.metric(cfg.early_stopping_metric)
        improved = metric < st.best_metric - cfg.early_stopping_min_delta
        if improved:
            st.best_metric, st.best_val_loss, st.best_step, st.bad_evals = metric, v.loss, st.step, 0
            backend.save({"step": st.step, "val_loss": v.loss}, checkpoint=False, best=True)
        else:
            st.bad_evals += 1
        st.first_val_loss = v.loss if st.first_val_loss is None else st.first_val_loss
        st.last_val_loss = v.loss
        marked = {"val_weighted_token_loss": v.weighted_token_loss} if v.weighted_tokens else {}
        st.history.append({"step": st.step, "val_loss": v.loss, **marked})
        reporter.log({"kind": "val", "step": st.step, "val_loss": v.loss, "val_ppl": math.exp(min(v.loss, 50)),
                      **({"val_tokens": v.tokens} if v.tokens is not None else {}), **marked,
                      "is_best": improved, "best_step": st.best_step})
        if on_save:
            on_save(st, False)
        patience = cfg.early_stopping_patience
        return patience is not None and st.bad_evals >= patience

    def checkpoint(interrupted: bool = False) -> None:
        if not backend.has_validation:  # no validation data: the newest weights are the result (as in mlx-lm)
            st.best_step = st.step
        backend.save({"step": st.step}, checkpoint=True, best=not backend.has_validation)
        backend.save_state(st, interrupted=interrupted)
        if on_save:
            on_save(st, True)

    if st.step == 0:  # a new run (checkpoints are written at step 1 or later)
        validate()  # the untrained baseline; it is the first "best"

    window = _Window()
    status = "finished"
    budget = effective_budget(st, cfg)
    try:
        while st.step < steps and not st.stopped_early and not out_of_time(st, budget):
            t0 = time.perf_counter()
            lr = lr_at(schedule_position(st.step, st.train_time, steps, budget))
            s = backend.step(st.step, lr)
            st.step += 1
            dt = time.perf_counter() - t0
            st.train_time += dt
            st.train_tokens += s.tokens
            st.computed_tokens += s.computed_tokens
            st.trained_tokens += s.trained_tokens
            st.pad_tokens += s.pad_tokens
            budget = refit_budget(st, cfg, budget_fit, reporter)
            window.add(s, dt)
            if not math.isfinite(s.loss):
                raise FloatingPointError(f"loss is {s.loss} at step {st.step}: lower learning_rate or check data")
            last = st.step == steps or out_of_time(st, budget)

            # --- report ------------------------------------------------------------------------------
            if st.step % cfg.steps_per_report == 0 or last:
                epoch = backend.epoch(st.step)
                reporter.log({
                    "kind": "train", "step": st.step, **({"epoch": round(epoch, 4)} if epoch is not None else {}),
                    "loss": window.loss / max(window.weight, 1), "lr": lr,
                    "tokens_per_sec": window.tokens / max(window.time, 1e-9),
                    "trained_tokens": window.targets, "tokens": window.tokens,
                    "grad_norm": window.grad_norm / window.steps,
                    "peak_memory_mb": round(backend.peak_memory_mb(), 1),
                })
                window = _Window()
            # --- eval --------------------------------------------------------------------------------
            if st.step % cfg.steps_per_eval == 0 or last:
                st.stopped_early = validate()
                if st.stopped_early:
                    reporter.event(f"early stopping at step {st.step}: no val improvement > "
                                   f"{cfg.early_stopping_min_delta} for {st.bad_evals} evaluations; best step "
                                   f"{st.best_step} ({cfg.early_stopping_metric} {st.best_metric:.4f})", st.step)
            # --- save --------------------------------------------------------------------------------
            if st.step % cfg.save_every == 0 or last or st.stopped_early:
                checkpoint()
    except KeyboardInterrupt:
        status = "interrupted"
        reporter.event(f"interrupted at step {st.step}: saving a checkpoint to resume from", st.step)
        if st.step > 0:
            checkpoint(interrupted=True)
    if st.stopped_early:
        status = "stopped_early"
    elif status == "finished" and st.step < steps:
        status = "time_budget"
        reporter.event(f"time budget of {budget:g} s reached at step {st.step} of {steps}", st.step)
    return FitResult(st, status, steps)
