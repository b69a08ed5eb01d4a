"""The MLX backend (Apple Silicon; Linux with `mlx[cpu]` for tests): mlx-lm's LoRA layers, datasets and loss
in a `StepBackend` for the one training loop (`tickerpulse.train.loop`: validation, best adapter, early stopping,
time budget, checkpoints, metrics), plus this backend's setup, header and summary.

The run folder is the same as the torch backend's (`tickerpulse.train.run_folder`): `adapters.safetensors` and
the checkpoints in mlx-lm's layout, `adapter_model.safetensors` in PEFT's, one `adapter_config.json` with both
tools' keys, so `mlx_lm.generate --adapter-path RUN`, `PeftModel.from_pretrained(base, RUN)` and `tickerpulse
fuse / eval / serve / generate --adapter RUN` all work whichever backend trained.

Data: mlx-lm's datasets (`create_dataset`: chat / completions / text, `mask_prompt` = loss on the last
assistant turn / the completion only), rendered with the model's own chat template; batches from mlx-lm's
`iterate_batches` (length-sorted, padded, no packing).

Limitations (errors, not silent fallbacks): fine_tune_type lora only (DoRA / full / QLoRA: use the torch
backend), no exact `resume` (start from weights with `resume_adapter_file`), no
`token_weights`, `train_through` or `soft_target` rows, no `length_group_batches` (mlx-lm's batches are length-sorted already).
`grad_checkpoint` is mlx-lm's (the block class recomputes its activations in backward; restored after the run).
`time_budget` works as on torch.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tickerpulse._optional import require
from tickerpulse.config import ConfigError
from tickerpulse.models.adapter_format import mlx_to_peft_weights, peft_config_from_mlx, to_peft_names
from tickerpulse.models.registry import resolve
from tickerpulse.train.backends import TrainResult, load_split_rows
from tickerpulse.train.config import TrainConfig, mlx_lm_differences
from tickerpulse.train.loop import (
    BudgetFit,
    LoopState,
    StepStats,
    ValLosses,
    loop_summary,
    rss_mb,
    run_loop,
    seed_everything,
)
from tickerpulse.train.peft_setup import trained_layer_indices
from tickerpulse.train.report import run_reporter
from tickerpulse.train.run_folder import BEST, RunFolder, checkpoint_name, sha256_file


def _check(cfg: TrainConfig) -> None:
    if cfg.fine_tune_type != "lora":
        raise ConfigError(f"backend mlx: fine_tune_type {cfg.fine_tune_type} is not supported yet (only lora, whose "
                          "adapters convert to PEFT); use backend: torch")
    if cfg.quantize:
        raise ConfigError("backend mlx: quantize is not supported (use backend: torch)")
    if cfg.token_weights:
        raise ConfigError("backend mlx: token_weights is not supported (use backend: torch)")
    if cfg.length_group_batches:
        raise ConfigError("backend mlx: length_group_batches is not supported (use backend: torch)")
    if cfg.resume:
        raise ConfigError("backend mlx: exact resume is not supported; start from the weights with "
                          "resume_adapter_file: RUN/adapters.safetensors and a new adapter_path")


def _optimizer(cfg: TrainConfig, optim: Any) -> Any:
    """mlx-lm's optimizer: the mlx.optimizers class `cfg.optimizer` with `optimizer_config.<name>` (whose defaults
    are mlx's own); a top-level `weight_decay` overrides the optimizer's."""
    kwargs = getattr(cfg.optimizer_config, cfg.optimizer).model_dump()
    if kwargs.get("bias_correction", False) is None:
        kwargs["bias_correction"] = False  # mlx's default
    if cfg.weight_decay is not None:
        kwargs["weight_decay"] = cfg.weight_decay
    for key in ("betas", "eps"):
        if isinstance(kwargs.get(key), (list, tuple)):
            kwargs[key] = list(kwargs[key])
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "muon": optim.Muon, "sgd": optim.SGD,
           "adafactor": optim.Adafactor}[cfg.optimizer]
    try:
        return cls(learning_rate=cfg.learning_rate, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer_config.{cfg.optimizer}: {exc}") from None


def _lora_keys(model: Any, wanted: list[str] | None, nn: Any) -> list[str]:
    """Paths of the linear layers inside a block ('self_attn.q_proj') that get LoRA; plain names are matched
    by suffix, as in the torch backend."""
    linear = sorted(n for n, m in model.layers[-1].named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear)))
    if not wanted or wanted == ["all-linear"]:
        return linear
    keys: list[str] = []
    for key in wanted:
        hit = [n for n in linear if n == key or n.endswith("." + key)]
        if not hit:
            raise ConfigError(f"lora_parameters.keys: '{key}' matches no linear layer in a block; "
                              f"linear layers there: {', '.join(linear)}")
        keys += hit
    return sorted(set(keys))


class _Encoded:
    """mlx-lm's processed items `(tokens, prompt_offset)` (the shape `iterate_batches` expects), without the
    samples whose trained tokens lie entirely beyond max_seq_length (as the torch backend drops them)."""

    def __init__(self, items: list[tuple[list[int], int]], rows: int):
        self.items, self.rows = items, rows
        self.dropped = rows - len(items)

    def __getitem__(self, idx: int) -> tuple[list[int], int]:
        return self.items[idx]

    def __len__(self) -> int:
        return len(self.items)


def _dataset(rows: list[dict[str, Any]], tokenizer: Any, mask_prompt: bool, max_seq_length: int) -> _Encoded:
    from mlx_lm.tuner.datasets import create_dataset

    masked = mask_prompt and "text" not in rows[0]
    ds = create_dataset(rows, tokenizer, SimpleNamespace(mask_prompt=masked))
    items = [ds.process(ds[i]) for i in range(len(ds))]
    return _Encoded([(t, off) for t, off in items if off < min(len(t), max_seq_length)], len(rows))


def _load_split(cfg: TrainConfig, split: str, required: bool) -> list[dict[str, Any]] | None:
    loaded = load_split_rows(cfg, split, required)
    return None if loaded is None else loaded[0]


def _loss(model: Any, ds: _Encoded | None, cfg: TrainConfig, num_batches: int) -> float:
    """mlx-lm's mean token loss over `num_batches` batches of `ds` (-1: all); leaves the model in training mode."""
    from mlx_lm.tuner.trainer import evaluate, iterate_batches

    loss = evaluate(model, ds, cfg.batch_size, num_batches, cfg.max_seq_length,
                    iterate_batches=partial(iterate_batches, seed=cfg.seed))
    model.train()
    return loss


class _MlxSteps:
    """`loop.StepBackend` on mlx-lm: its batches (`iterate_batches`, looping), loss and evaluation.

    Each micro-batch's gradient is weighted by its trained tokens, so accumulating equals one bigger batch (as
    on torch). Weights are saved in both layouts at once (`run_folder`); there is no resume state."""

    def __init__(self, cfg: TrainConfig, model: Any, sets: dict[str, _Encoded | None],
                 save: Callable[[str | None, dict[str, Any], bool], None]):
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        from mlx_lm.tuner.trainer import default_loss, iterate_batches

        self.cfg, self.model, self.sets, self.save_weights, self.mx, self.optim = cfg, model, sets, save, mx, optim
        self.opt = _optimizer(cfg, optim)
        self.cache_threshold = 0 if cfg.clear_cache_threshold is None else cfg.clear_cache_threshold  # mlx-lm's 0
        self.loss_and_grad = nn.value_and_grad(model, default_loss)
        self.batches = iterate_batches(sets["train"], cfg.batch_size, cfg.max_seq_length, loop=True, seed=cfg.seed)
        self.has_validation = sets["valid"] is not None
        model.train()

    def step(self, step: int, lr: float) -> StepStats:
        from mlx.utils import tree_map

        mx = self.mx
        grads, loss_sum, ntoks, tokens = None, mx.array(0.0), mx.array(0), 0
        for _ in range(self.cfg.grad_accumulation_steps):
            batch, lengths = next(self.batches)
            (lv, nt), g = self.loss_and_grad(self.model, batch, lengths)
            g = tree_map(lambda x, n=nt: x * n, g)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            loss_sum, ntoks = loss_sum + lv * nt, ntoks + nt
            tokens += int(lengths[:, 1].sum().item())
        grads = tree_map(lambda x: x / ntoks, grads)
        gnorm = mx.array(math.nan)
        if self.cfg.max_grad_norm:
            grads, gnorm = self.optim.clip_grad_norm(grads, self.cfg.max_grad_norm)
        self.opt.learning_rate = lr
        self.opt.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self.opt.state, loss_sum, ntoks, gnorm)
        if mx.get_cache_memory() > self.cache_threshold:
            mx.clear_cache()
        n_t = int(ntoks.item())
        return StepStats(loss=float((loss_sum / ntoks).item()), weight=n_t, trained_tokens=n_t, tokens=tokens,
                         grad_norm=float(gnorm.item()))

    def validate(self) -> ValLosses:
        return ValLosses(_loss(self.model, self.sets["valid"], self.cfg, self.cfg.val_batches), None)

    def save(self, meta: dict[str, Any], *, checkpoint: bool, best: bool) -> None:
        self.save_weights(checkpoint_name(meta["step"]) if checkpoint else None, meta, best)

    def save_state(self, st: LoopState, *, interrupted: bool) -> None:
        """No exact resume on mlx (refused in `_check`)."""

    def epoch(self, step: int) -> None:
        return None

    def peak_memory_mb(self) -> float:
        return max(self.mx.get_peak_memory() / 2**20, rss_mb())


def train(cfg: TrainConfig, argv: list[str] | None = None, budget_fit: BudgetFit | None = None) -> TrainResult:
    """Train LoRA with mlx-lm on `cfg` (same keys and run folder as the torch backend)."""
    t_start = time.perf_counter()
    _check(cfg)
    from tickerpulse.models.mlx import import_mlx, load_mlx

    mx = import_mlx()
    nn = require("mlx.nn", "the MLX backend")
    require("mlx.optimizers", "the MLX backend")
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    seed_everything(cfg.seed)
    mx.random.seed(cfg.seed)
    model_dir = resolve(cfg.model)
    model, tokenizer = load_mlx(model_dir)
    if cfg.dtype in ("bfloat16", "float16"):
        model.set_dtype(getattr(mx, cfg.dtype))
    model.freeze()
    n_blocks = len(model.layers)
    layers = trained_layer_indices(cfg.num_layers, n_blocks)
    lp = cfg.lora_parameters
    keys = _lora_keys(model, lp.keys, nn)
    mlx_cfg = {"fine_tune_type": "lora", "model": cfg.model, "num_layers": len(layers),
               "lora_parameters": {"rank": lp.rank, "scale": lp.lora_alpha / lp.rank, "dropout": lp.dropout,
                                   "keys": keys}}
    linear_to_lora_layers(model, len(layers), mlx_cfg["lora_parameters"])
    block_type, block_call = type(model.layers[0]), type(model.layers[0]).__call__
    if cfg.grad_checkpoint:  # mlx-lm's way: it patches the block class, so put it back when the run ends
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    lora_config = peft_config_from_mlx(mlx_cfg, layers, keys, lp.rank, n_blocks=n_blocks, base_model=cfg.model)
    if cfg.resume_adapter_file:  # either layout: a run's adapters.safetensors, mlx-lm's or PEFT's file
        from safetensors.numpy import load_file

        from tickerpulse.models.adapter_format import peft_to_mlx_weights

        weights, *_ = peft_to_mlx_weights(to_peft_names(load_file(cfg.resume_adapter_file)))
        model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=False)
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(model.parameters()))

    run = RunFolder(cfg.adapter_path)
    run.prepare(resume=False)
    rows = {"train": _load_split(cfg, "train", cfg.train), "valid": _load_split(cfg, "valid", False),
            "test": _load_split(cfg, "test", cfg.test)}
    for split, split_rows in rows.items():
        for key, why in (("train_through", "cannot cut"), ("soft_target", "cannot train")):
            n = next((i for i, r in enumerate(split_rows or [], 1) if key in r), None)
            if n is not None:
                raise ConfigError(f"backend mlx: {split} row {n} has {key}, which mlx-lm's datasets {why} "
                                  "(use backend: torch)")
    sets = {k: _dataset(v, tokenizer, cfg.mask_prompt, cfg.max_seq_length) if v else None for k, v in rows.items()}
    for split, ds in sets.items():
        if ds is not None and len(ds) < cfg.batch_size and (split != "train" or cfg.train):
            raise ConfigError(f"{split}: {len(ds)} rows, fewer than batch_size {cfg.batch_size} (mlx-lm batches need "
                              "at least one full batch)")
    run.write_config(cfg.model_dump(mode="json"))
    run.append_command(argv)
    run.save_tokenizer(tokenizer._tokenizer)
    files = {}
    if Path(cfg.data).is_dir():
        from tickerpulse.data.formats import split_files

        files = split_files(cfg.data)
    fingerprint = {s: {"path": str(files[s].resolve()) if s in files else f"{cfg.data}:{s}",
                       "sha256": sha256_file(files[s]) if s in files else None, "rows": len(r)}
                   for s, r in rows.items() if r}
    run.write_data_fingerprint(fingerprint)

    per_epoch = len(sets["train"]) // cfg.batch_size if sets["train"] is not None else 0
    steps = (max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accumulation_steps)) if cfg.epochs else cfg.iters) \
        if cfg.train else 0
    reporter = run_reporter(cfg, run.path, steps)
    device = str(mx.default_device())
    for line in (
        f"run folder {cfg.adapter_path}  (backend mlx {mx.__version__}, device {device}, base dtype "
        f"{str(tree_flatten(model.parameters())[0][1].dtype).replace('mlx.core.', '')}, adapters fp32)",
        f"model {cfg.model} -> {model_dir}",
        f"lora: {trainable:,} trainable of {total:,} parameters, blocks {layers[0]}..{layers[-1]}, rank {lp.rank}, "
        f"scale {lp.lora_alpha / lp.rank:g}, keys {keys}",
        f"steps {steps} x batch {cfg.batch_size} x accum {cfg.grad_accumulation_steps}, lr {cfg.learning_rate:g}, "
        f"max_seq_length {cfg.max_seq_length}, mask_prompt {'on' if cfg.mask_prompt else 'off'}, packing off (mlx-lm)",
        *(f"{s}: {len(d)} samples of {d.rows} rows" + (f"; {d.dropped} dropped: no trained token within "
          f"max_seq_length" if d.dropped else "") for s, d in sets.items() if d is not None),
    ):
        reporter.event(line)
    opt_desc = getattr(cfg.optimizer_config, cfg.optimizer).model_dump(exclude_none=True)
    reporter.event(f"optimizer {cfg.optimizer} {opt_desc}, lr schedule "
                   f"{cfg.lr_schedule.model_dump() if cfg.lr_schedule else 'constant'}")
    diffs = mlx_lm_differences(cfg, "mlx")
    if diffs:
        reporter.event("differs from mlx-lm's defaults: " + "; ".join(diffs))

    def save(name: str | None, meta: dict[str, Any], best: bool) -> None:
        """Checkpoint `name` (None: none) and / or the best adapter, under both tools' names."""
        import torch

        mlx_w = {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.trainable_parameters())}
        tensors = {k: torch.from_numpy(v) for k, v in mlx_to_peft_weights(mlx_w)[0].items()}
        meta = {**meta, "kind": "peft", "fine_tune_type": "lora", "backend": "mlx"}
        if name is not None:
            run.save_weights(name, tensors, meta)
        if best:
            run.save_best(tensors, meta, lora_config, n_blocks=n_blocks)

    st = LoopState()
    extra: dict[str, Any] = {}

    def summary(status: str) -> dict[str, Any]:
        return {
            "status": status, "backend": "mlx", "base_model": cfg.model, "base_model_path": str(model_dir),
            "fine_tune_type": "lora", **loop_summary(st, cfg, steps),
            "peak_memory_mb": round(max(mx.get_peak_memory() / 2**20, rss_mb()), 1),
            "wall_time_s": round(time.perf_counter() - t_start, 2),
            "device": device, "trainable_params": trainable, "total_params": total,
            "trained_layers": [layers[0], layers[-1]], "eos_token": tokenizer.eos_token,
            "val_history": st.history,
            "host": {"platform": platform.platform(), "python": sys.version.split()[0], "mlx": mx.__version__},
            **extra,
        }

    def refresh(state: LoopState, checkpoint: bool) -> None:
        run.write_summary(summary("running"))
        if checkpoint:
            run.plot()

    status = "not_trained"
    try:
        if cfg.train:
            result = run_loop(_MlxSteps(cfg, model, sets, save), cfg, reporter, st, steps=steps, on_save=refresh,
                              budget_fit=budget_fit)
            status = result.status
        if cfg.test and sets["test"] is not None and status != "interrupted":
            if cfg.train and (run / BEST).is_file():  # evaluate what ships
                model.load_weights(str(run / BEST), strict=False)
            loss = _loss(model, sets["test"], cfg, cfg.test_batches)
            reporter.log({"kind": "test", "step": st.step, "test_loss": loss, "test_ppl": math.exp(min(loss, 50))})
            extra.update(test_loss=loss, test_ppl=math.exp(min(loss, 50)))
    finally:
        if cfg.train or cfg.test:
            run.write_summary(summary(status))
            run.plot()
        reporter.close()
        block_type.__call__ = block_call
    if status == "interrupted":
        raise KeyboardInterrupt
    return TrainResult(run.path, summary(status))
