"""The training loop: one readable function, eval -> report -> save, with exact resume.

One step = `grad_accumulation_steps` micro-batches of `batch_size` samples; the loss of a step is the mean
token cross-entropy over all its trained tokens (micro-batches are weighted by their token counts, so
accumulating is the same as one bigger batch). Validation runs before the first step (the base model's loss),
every `steps_per_eval` steps and at the end; the best validation loss so far is saved at once as
`adapters.safetensors`; `early_stopping_patience` evaluations without an improvement of more than
`early_stopping_min_delta` end the run. Every `save_every` steps (and at the end, or on Ctrl-C) the weights
go to `{step:07d}_adapters.safetensors` and the resume state to `checkpoint.pt`: optimizer, step, the data
cursor, the early-stopping state and the torch / numpy / python RNG states. The learning rate and the data
order are pure functions of the step (schedule.py, packing.py), so these are all a resume needs.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tickerpulse.config import ConfigError
from tickerpulse.train.collate import IGNORE, Sample
from tickerpulse.train.config import BUDGET_FIT_STEP, TrainConfig
from tickerpulse.train.loss import batch_loss, supports_explicit_mask, token_losses
from tickerpulse.train.optimizers import build_optimizer
from tickerpulse.train.packing import Batch, BatchPlan, eval_batches, make_batch
from tickerpulse.train.peft_setup import TrainableModel
from tickerpulse.train.report import Reporter
from tickerpulse.train.run_folder import BEST, RunFolder, checkpoint_name
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
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # val records, for the summary


@dataclass
class FitResult:
    state: LoopState
    status: str  # finished | time_budget | stopped_early | interrupted
    total_steps: int


def batch_plan(cfg: TrainConfig, train: Sequence[Sample]) -> BatchPlan:
    """The run's training batches (length-grouped when `length_group_batches` is set)."""
    group = cfg.length_group_batches
    return BatchPlan(len(train), cfg.batch_size, cfg.seed, [len(s) for s in train] if group > 1 else None, group)


def total_steps(cfg: TrainConfig, plan: BatchPlan) -> int:
    """iters, or ceil(epochs * optimizer steps per epoch) when `epochs` is set."""
    if cfg.epochs is None:
        return cfg.iters
    return max(1, math.ceil(cfg.epochs * plan.per_epoch / cfg.grad_accumulation_steps))


def schedule_position(step: int, train_time: float, steps: int, time_budget: float | None) -> float:
    """Where the lr schedule stands: the step count, or the spent share of `time_budget` in steps when that is
    further along (a time-budgeted run then still warms up by step and decays to its end value in time)."""
    if time_budget is None:
        return float(step)
    return max(float(step), min(train_time / time_budget, 1.0) * steps)


def out_of_time(st: LoopState, time_budget: float | None) -> bool:
    """Whether a time-budgeted run has spent its budget (seconds of steps, validation excluded)."""
    return time_budget is not None and st.train_time >= time_budget


BudgetFit = Callable[[float, float], float]
"""(tokens/s so far, step seconds spent) -> total seconds of steps the run may take."""


def effective_budget(st: LoopState, cfg: TrainConfig) -> float | None:
    return st.fitted_budget if st.fitted_budget is not None else cfg.time_budget


def refit_budget(st: LoopState, cfg: TrainConfig, budget_fit: BudgetFit | None, reporter: Reporter) -> float | None:
    """At step BUDGET_FIT_STEP, let `budget_fit` shorten the time budget from the measured throughput; returns
    the budget in effect (`effective_budget`).

    A caller with a wall-clock deadline after training (the recipe's evaluation) cannot know the step budget
    in advance: on a machine half as fast, training AND the stages after it take twice as long. Only a
    shorter budget is taken (the configured one stays the cap); the lr schedule follows the new budget."""
    budget = effective_budget(st, cfg)
    if budget_fit is None or st.step != BUDGET_FIT_STEP or st.train_time <= 0:
        return budget
    tok_s = st.train_tokens / st.train_time
    fitted = max(budget_fit(tok_s, st.train_time), st.train_time)
    if budget is not None and fitted >= budget:
        return budget
    st.fitted_budget = fitted
    reporter.event(f"time budget set to {fitted:.0f} s of steps from {tok_s:.0f} tokens/s at step {st.step} "
                   f"(was {f'{budget:g} s' if budget is not None else 'none'})", st.step)
    return fitted


def peak_memory_mb(device: str) -> float:
    """Peak accelerator memory (CUDA) or peak resident set size of this process (CPU)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clear_cache(device: str, threshold: int | None) -> None:
    """mlx-lm's `clear_cache_threshold`: hand the allocator's cached-but-unused memory back when it exceeds
    `threshold` bytes (None: never). CPU tensors use no caching allocator, so there it does nothing."""
    if threshold is None:
        return
    if device.startswith("cuda") and torch.cuda.memory_reserved() - torch.cuda.memory_allocated() > threshold:
        torch.cuda.empty_cache()
    elif device == "mps" and torch.mps.driver_allocated_memory() - torch.mps.current_allocated_memory() > threshold:
        torch.mps.empty_cache()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class ValLosses:
    """One evaluation: the (weighted) training loss and the loss of the `token_weights` positions alone."""

    loss: float  # mean token loss, weighted like training (`token_weights`)
    tokens: int  # trained tokens
    weighted_token_loss: float  # mean unweighted loss over the token_weights positions (nan without any)
    weighted_tokens: int

    def metric(self, name: str) -> float:
        """The early-stopping metric `name` (TrainConfig.early_stopping_metric)."""
        return self.weighted_token_loss if name == "weighted_token_loss" else self.loss


@torch.no_grad()
def validation_losses(causal_lm: Any, batches: Sequence[Batch], device: str) -> ValLosses:
    """Both validation losses over fixed batches from one forward pass each, in eval mode (no dropout)."""
    was_training = causal_lm.training
    causal_lm.eval()
    total = wsum = marked = 0.0
    n = n_marked = 0
    for b in batches:
        b = b.to(device)
        ce = token_losses(causal_lm, b)
        if b.weights is None:
            total += ce.sum().item()
        else:
            w = b.weights[b.targets != IGNORE]
            total += (ce * w).sum().item()
            sel = w != 1.0
            marked += ce[sel].sum().item()
            n_marked += int(sel.sum().item())
        wsum += b.weight_total
        n += b.n_targets
    causal_lm.train(was_training)
    return ValLosses(total / wsum if wsum else math.nan, n, marked / n_marked if n_marked else math.nan, n_marked)


def evaluate_loss(causal_lm: Any, batches: Sequence[Batch], device: str) -> tuple[float, int]:
    """(mean (weighted) token loss, trained tokens) over fixed batches, in eval mode (no dropout)."""
    v = validation_losses(causal_lm, batches, device)
    return v.loss, v.tokens


def can_share_prefix(causal_lm: Any, max_seq_length: int, varlen: bool) -> bool:
    """Shared-prefix rows need varlen attention or a model that takes an explicit 4-D mask (see packing.py)."""
    return varlen or supports_explicit_mask(causal_lm, max_seq_length)


def use_shared_prefix(cfg: TrainConfig, tm: TrainableModel) -> bool:
    """The run asks for shared-prefix rows (`share_prefix`, with packing) and the model can take them."""
    return cfg.share_prefix and cfg.packing and can_share_prefix(tm.causal_lm, cfg.max_seq_length, tm.varlen)


def fit(
    cfg: TrainConfig,
    tm: TrainableModel,
    train: Sequence[Sample],
    valid: Sequence[Sample],
    run: RunFolder,
    reporter: Reporter,
    *,
    pad_id: int,
    resume_state: dict[str, Any] | None = None,
    on_save: Callable[[LoopState, bool], None] | None = None,
    budget_fit: BudgetFit | None = None,
) -> FitResult:
    """Train `tm` on `train`, validating on `valid`; writes checkpoints and metrics into `run`.

    Args:
        resume_state: the dict from `checkpoint.pt` (weights already loaded into `tm`).
        on_save: called after every evaluation (False) and checkpoint (True): the backend refreshes
            summary.json, and the loss plot at checkpoints.
        budget_fit: shortens `time_budget` once the throughput is known (`refit_budget`).
    """
    device = tm.device
    accum = cfg.grad_accumulation_steps
    plan = batch_plan(cfg, train)
    steps = total_steps(cfg, plan)
    lr_at = build_schedule(cfg, steps)
    params = [p for p in tm.model.parameters() if p.requires_grad]
    opt = build_optimizer(cfg, params)
    share = use_shared_prefix(cfg, tm)
    val_sets = [make_batch(valid, idx, max_seq_length=cfg.max_seq_length, pad_id=pad_id, packing=cfg.packing,
                           share_prefix=share, varlen=tm.varlen)
                for idx in eval_batches(len(valid), cfg.batch_size, cfg.val_batches)]
    data_key = {"seed": cfg.seed, "batch_size": plan.batch_size, "samples": plan.n, "accum": accum,
                **({"length_group_batches": plan.group} if plan.lengths is not None else {})}
    st = LoopState()
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        known = set(LoopState.__dataclass_fields__)
        st = LoopState(**{k: v for k, v in resume_state["loop"].items() if k in known})
        if "best_metric" not in resume_state["loop"] and cfg.early_stopping_metric == "val_loss":
            st.best_metric = st.best_val_loss  # a checkpoint from before the metric was recorded
        if resume_state["data"] != data_key:
            raise ConfigError(f"cannot resume exactly: data/batching changed ({resume_state['data']} -> {data_key})")
        set_rng_state(resume_state["rng"])

    def save_checkpoint(rng: dict[str, Any] | None = None) -> None:
        meta = {"step": st.step, "kind": tm.kind, "fine_tune_type": cfg.fine_tune_type}
        weights = tm.trainable_state()
        run.save_weights(checkpoint_name(st.step), weights, meta)
        if not val_sets:  # no validation data: the newest weights are the result (as in mlx-lm)
            st.best_step = st.step
            run.save_best(weights, meta, tm.model if tm.kind == "peft" else None)
        run.save_state({
            "step": st.step, "optimizer": opt.state_dict(), "rng": rng or rng_state(), "loop": st.__dict__,
            "data": data_key,
            "adapter_file": checkpoint_name(st.step),
        })
        if on_save:
            on_save(st, True)

    def validate() -> bool:
        """Evaluate, keep the best adapter, return True when early stopping says stop."""
        if not val_sets:
            return False
        v = validation_losses(tm.causal_lm, val_sets, device)
        val_loss, metric = v.loss, v.metric(cfg.early_stopping_metric)
        improved = metric < st.best_metric - cfg.early_stopping_min_delta
        if improved:
            st.best_metric, st.best_val_loss, st.best_step, st.bad_evals = metric, val_loss, st.step, 0
            run.save_best(tm.trainable_state(), {"step": st.step, "val_loss": val_loss, "kind": tm.kind,
                                                 "fine_tune_type": cfg.fine_tune_type},
                          tm.model if tm.kind == "peft" else None)
        else:
            st.bad_evals += 1
        st.first_val_loss = val_loss if st.first_val_loss is None else st.first_val_loss
        st.last_val_loss = val_loss
        marked = {"val_weighted_token_loss": v.weighted_token_loss} if v.weighted_tokens else {}
        st.history.append({"step": st.step, "val_loss": val_loss, **marked})
        reporter.log({"kind": "val", "step": st.step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)),
                      "val_tokens": v.tokens, **marked, "is_best": improved, "best_step": st.best_step})
        if on_save:
            on_save(st, False)
        patience = cfg.early_stopping_patience
        return patience is not None and st.bad_evals >= patience

    if resume_state is None:
        validate()  # the untrained baseline; it is the first "best"

    tm.model.train()
    def new_window() -> dict[str, Any]:
        return {"loss": 0.0, "wsum": 0.0, "targets": 0, "tokens": 0, "time": 0.0, "grad_norm": 0.0, "steps": 0}

    window = new_window()
    status = "finished"
    step_rng = rng_state()
    budget = effective_budget(st, cfg)
    try:
        while st.step < steps and not st.stopped_early and not out_of_time(st, budget):
            t0 = time.perf_counter()
            lr = lr_at(schedule_position(st.step, st.train_time, steps, budget))
            for group in opt.param_groups:
                group["lr"] = lr
            micro = [make_batch(train, plan.indices(st.step * accum + j), max_seq_length=cfg.max_seq_length,
                                pad_id=pad_id, packing=cfg.packing, share_prefix=share, varlen=tm.varlen)
                     for j in range(accum)]
            n_targets = sum(b.n_targets for b in micro)
            w_total = sum(b.weight_total for b in micro)  # = n_targets unless token_weights are set
            step_loss = 0.0
            for b in micro:
                loss = batch_loss(tm.causal_lm, b.to(device)) / w_total
                loss.backward()
                step_loss += loss.item()
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
                         if cfg.max_grad_norm else math.nan)
            opt.step()
            opt.zero_grad(set_to_none=True)
            clear_cache(device, cfg.clear_cache_threshold)
            st.step += 1
            step_rng = rng_state()  # if interrupted before the next step completes, it is redone from here
            dt = time.perf_counter() - t0
            tokens = sum(b.n_tokens for b in micro)
            st.train_time += dt
            st.train_tokens += tokens
            st.computed_tokens += sum(b.n_computed for b in micro)
            st.trained_tokens += n_targets
            st.pad_tokens += sum(b.n_pad for b in micro)
            budget = refit_budget(st, cfg, budget_fit, reporter)
            for k, v in (("loss", step_loss * w_total), ("wsum", w_total), ("targets", n_targets), ("tokens", tokens), ("time", dt),
                         ("grad_norm", grad_norm), ("steps", 1)):
                window[k] += v
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"loss is {step_loss} at step {st.step}: lower learning_rate or check data")
            last = st.step == steps or out_of_time(st, budget)

            # --- report ------------------------------------------------------------------------------
            if st.step % cfg.steps_per_report == 0 or last:
                reporter.log({
                    "kind": "train", "step": st.step, "epoch": round(plan.epoch_of(st.step * accum), 4),
                    "loss": window["loss"] / max(window["wsum"], 1), "lr": lr,
                    "tokens_per_sec": window["tokens"] / max(window["time"], 1e-9),
                    "trained_tokens": window["targets"], "tokens": window["tokens"],
                    "grad_norm": window["grad_norm"] / window["steps"],
                    "peak_memory_mb": round(peak_memory_mb(device), 1),
                })
                window = new_window()
            # --- eval --------------------------------------------------------------------------------
            if st.step % cfg.steps_per_eval == 0 or last:
                st.stopped_early = validate()
                if st.stopped_early:
                    reporter.event(f"early stopping at step {st.step}: no val improvement > "
                                   f"{cfg.early_stopping_min_delta} for {st.bad_evals} evaluations; "
                                   f"best step {st.best_step} ({cfg.early_stopping_metric} {st.best_metric:.4f})", st.step)
            # --- save --------------------------------------------------------------------------------
            if st.step % cfg.save_every == 0 or last or st.stopped_early:
                save_checkpoint()
    except KeyboardInterrupt:
        status = "interrupted"
        reporter.event(f"interrupted at step {st.step}: saving a checkpoint to resume from", st.step)
        opt.zero_grad(set_to_none=True)
        if st.step > 0:
            save_checkpoint(step_rng)
    if st.stopped_early:
        status = "stopped_early"
    elif status == "finished" and st.step < steps:
        status = "time_budget"
        reporter.event(f"time budget of {budget:g} s reached at step {st.step} of {steps}", st.step)
    return FitResult(st, status, steps)
