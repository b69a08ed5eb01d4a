"""The torch backend's part of the training loop (`loop.StepBackend`): batches, step, validation, checkpoints.

One step = `grad_accumulation_steps` micro-batches of `batch_size` samples; the loss of a step is the mean
token cross-entropy over all its trained tokens (micro-batches are weighted by their token counts, so
accumulating is the same as one bigger batch). Checkpoints are `{step:07d}_adapters.safetensors` plus the resume
state in `checkpoint.pt`: optimizer, step, the data cursor, the loop state and the torch / numpy / python RNG
states. The learning rate and the data order are pure functions of the step (schedule.py, packing.py), so these
are all an exact resume needs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tickerpulse.config import ConfigError
from tickerpulse.train.collate import IGNORE, Sample
from tickerpulse.train.config import TrainConfig
from tickerpulse.train.loop import LoopState, StepStats, ValLosses, rss_mb
from tickerpulse.train.loss import batch_loss, supports_explicit_mask, token_losses
from tickerpulse.train.optimizers import build_optimizer
from tickerpulse.train.packing import Batch, BatchPlan, eval_batches, make_batch
from tickerpulse.train.peft_setup import TrainableModel
from tickerpulse.train.run_folder import RunFolder, checkpoint_name


def batch_plan(cfg: TrainConfig, train: Sequence[Sample]) -> BatchPlan:
    """The run's training batches (length-grouped when `length_group_batches` is set)."""
    group = cfg.length_group_batches
    return BatchPlan(len(train), cfg.batch_size, cfg.seed, [len(s) for s in train] if group > 1 else None, group)


def total_steps(cfg: TrainConfig, plan: BatchPlan) -> int:
    """iters, or ceil(epochs * optimizer steps per epoch) when `epochs` is set."""
    if cfg.epochs is None:
        return cfg.iters
    return max(1, math.ceil(cfg.epochs * plan.per_epoch / cfg.grad_accumulation_steps))


def peak_memory_mb(device: str) -> float:
    """Peak accelerator memory (CUDA) or peak resident set size of this process (CPU)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return rss_mb()


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


@torch.no_grad()
def validation_losses(causal_lm: Any, batches: Sequence[Batch], device: str) -> ValLosses:
    """Both validation losses over fixed batches from one forward pass each, in eval mode (no dropout)."""
    was_training = causal_lm.training
    causal_lm.eval()
    total = wsum = marked = 0.0
    n = n_marked = 0
    for b in batches:
        b = b.to(device)
        ce = token_losses(causal_lm, b)  # trained positions only: soft-target terms are not scored
        if b.weights is None:
            total += ce.sum().item()
            wsum += b.n_targets
        else:
            w = b.weights[b.targets != IGNORE]
            total += (ce * w).sum().item()
            wsum += w.sum().item()
            sel = w != 1.0
            marked += ce[sel].sum().item()
            n_marked += int(sel.sum().item())
        n += b.n_targets
    causal_lm.train(was_training)
    return ValLosses(total / wsum if wsum else math.nan, n, marked / n_marked if n_marked else math.nan, n_marked)


def evaluate_loss(causal_lm: Any, batches: Sequence[Batch], device: str) -> tuple[float, int]:
    """(mean (weighted) token loss, trained tokens) over fixed batches, in eval mode (no dropout)."""
    v = validation_losses(causal_lm, batches, device)
    return v.loss, v.tokens or 0


def can_share_prefix(causal_lm: Any, max_seq_length: int, varlen: bool) -> bool:
    """Shared-prefix rows need varlen attention or a model that takes an explicit 4-D mask (see packing.py)."""
    return varlen or supports_explicit_mask(causal_lm, max_seq_length)


def use_shared_prefix(cfg: TrainConfig, tm: TrainableModel) -> bool:
    """The run asks for shared-prefix rows (`share_prefix`, with packing) and the model can take them."""
    return cfg.share_prefix and cfg.packing and can_share_prefix(tm.causal_lm, cfg.max_seq_length, tm.varlen)


class TorchSteps:
    """`loop.StepBackend` for a `TrainableModel`: packed / padded batches, accumulation, clipping, checkpoints.

    With `resume_state` (the dict from `checkpoint.pt`, weights already loaded into `tm`) the optimizer, RNG
    and `self.state` continue where the run stopped; a changed data / batching setup is refused.
    """

    def __init__(self, cfg: TrainConfig, tm: TrainableModel, train: Sequence[Sample], valid: Sequence[Sample],
                 run: RunFolder, *, pad_id: int, resume_state: dict[str, Any] | None = None):
        self.cfg, self.tm, self.train, self.run, self.pad_id = cfg, tm, train, run, pad_id
        self.plan = batch_plan(cfg, train)
        self.params = [p for p in tm.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(cfg, self.params)
        self.share = use_shared_prefix(cfg, tm)
        self.val_sets = [self._batch(valid, idx) for idx in eval_batches(len(valid), cfg.batch_size, cfg.val_batches)]
        self.has_validation = bool(self.val_sets)
        plan = self.plan
        self.data_key = {"seed": cfg.seed, "batch_size": plan.batch_size, "samples": plan.n,
                         "accum": cfg.grad_accumulation_steps,
                         **({"length_group_batches": plan.group} if plan.lengths is not None else {})}
        self.state: LoopState | None = None
        if resume_state is not None:
            self.opt.load_state_dict(resume_state["optimizer"])
            self.state = LoopState.restore(resume_state["loop"], cfg.early_stopping_metric)
            if resume_state["data"] != self.data_key:
                raise ConfigError(f"cannot resume exactly: data/batching changed ({resume_state['data']} -> "
                                  f"{self.data_key})")
            set_rng_state(resume_state["rng"])
        self.step_rng = rng_state()
        tm.model.train()

    def _batch(self, samples: Sequence[Sample], idx: Sequence[int]) -> Batch:
        return make_batch(samples, idx, max_seq_length=self.cfg.max_seq_length, pad_id=self.pad_id,
                          packing=self.cfg.packing, share_prefix=self.share, varlen=self.tm.varlen)

    def step(self, step: int, lr: float) -> StepStats:
        accum, device = self.cfg.grad_accumulation_steps, self.tm.device
        for group in self.opt.param_groups:
            group["lr"] = lr
        micro = [self._batch(self.train, self.plan.indices(step * accum + j)) for j in range(accum)]
        n_targets = sum(b.n_targets for b in micro)
        w_total = sum(b.weight_total for b in micro)  # = n_targets unless token_weights are set
        step_loss = 0.0
        for b in micro:
            loss = batch_loss(self.tm.causal_lm, b.to(device)) / w_total
            loss.backward()
            step_loss += loss.item()
        max_norm = self.cfg.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm).item() if max_norm else math.nan
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        clear_cache(device, self.cfg.clear_cache_threshold)
        self.step_rng = rng_state()  # if interrupted before the next step completes, it is redone from here
        return StepStats(loss=step_loss, weight=w_total, trained_tokens=n_targets,
                         tokens=sum(b.n_tokens for b in micro), grad_norm=grad_norm,
                         computed_tokens=sum(b.n_computed for b in micro), pad_tokens=sum(b.n_pad for b in micro))

    def validate(self) -> ValLosses:
        return validation_losses(self.tm.causal_lm, self.val_sets, self.tm.device)

    def save(self, meta: dict[str, Any], *, checkpoint: bool, best: bool) -> None:
        tm = self.tm
        meta = {**meta, "kind": tm.kind, "fine_tune_type": self.cfg.fine_tune_type}
        weights = tm.trainable_state()
        if checkpoint:
            self.run.save_weights(checkpoint_name(meta["step"]), weights, meta)
        if best:
            self.run.save_best(weights, meta, tm.model if tm.kind == "peft" else None)

    def save_state(self, st: LoopState, *, interrupted: bool) -> None:
        if interrupted:
            self.opt.zero_grad(set_to_none=True)
        self.run.save_state({
            "step": st.step, "optimizer": self.opt.state_dict(), "rng": self.step_rng if interrupted else rng_state(),
            "loop": st.__dict__, "data": self.data_key, "adapter_file": checkpoint_name(st.step),
        })

    def epoch(self, step: int) -> float:
        return self.plan.epoch_of(step * self.cfg.grad_accumulation_steps)

    def peak_memory_mb(self) -> float:
        return peak_memory_mb(self.tm.device)
