"""The MLX backend (Apple Silicon; Linux with `mlx[cpu]` for tests): mlx-lm's LoRA layers, datasets and loss,
our loop around them (validation before the first step and every `steps_per_eval`, best adapter, early
stopping, checkpoints, metrics, plot, summary).

The run folder is the same as the torch backend's (`tickerpulse.train.run_folder`): `adapters.safetensors` and
the checkpoints in mlx-lm's layout, `adapter_model.safetensors` in PEFT's, one `adapter_config.json` with both
tools' keys, so `mlx_lm.generate --adapter-path RUN`, `PeftModel.from_pretrained(base, RUN)` and `tickerpulse
fuse / eval / serve / generate --adapter RUN` all work whichever backend trained.

Data: mlx-lm's datasets (`create_dataset`: chat / completions / text, `mask_prompt` = loss on the last
assistant turn / the completion only), rendered with the model's own chat template; batches from mlx-lm's
`iterate_batches` (length-sorted, padded, no packing).

Limitations (errors, not silent fallbacks): fine_tune_type lora only (DoRA / full / QLoRA: use the torch
backend), no exact `resume` (start from weights with `resume_adapter_file`), no
`token_weights` or `train_through` rows, no `length_group_batches` (mlx-lm's batches are length-sorted already).
`grad_checkpoint` is mlx-lm's (the block class recomputes its activations in backward; restored after the run).
`time_budget` works as on torch.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tickerpulse._optional import require
from tickerpulse.config import ConfigError
from tickerpulse.data.formats import load_split
from tickerpulse.models.registry import resolve
from tickerpulse.models.adapter_format import mlx_to_peft_weights, peft_config_from_mlx, to_peft_names
from tickerpulse.train.backends import TrainResult
from tickerpulse.train.config import TrainConfig, mlx_lm_differences
from tickerpulse.train.loop import (
    BudgetFit,
    LoopState,
    effective_budget,
    out_of_time,
    peak_memory_mb,
    refit_budget,
    schedule_position,
    seed_everything,
)
from tickerpulse.train.peft_setup import trained_layer_indices
from tickerpulse.train.report import ConsoleSink, JsonlSink, Reporter, build_trackers, tracker_names
from tickerpulse.train.run_folder import BEST, METRICS, RunFolder, checkpoint_name, sha256_file
from tickerpulse.train.schedule import build_schedule

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
    """Rows of one split from `data`, or from mlx-lm's `hf_dataset` (`datasets.load_dataset`)."""
    try:
        if cfg.hf_dataset is not None:
            from tickerpulse.data.hub import load_hf_dataset

            rows, _ = load_hf_dataset([s.model_dump() for s in cfg.hf_dataset], split)
        else:
            rows, _ = load_split(cfg.data, split)
    except FileNotFoundError:
        if required:
            raise
        return None
    return rows


def train(cfg: TrainConfig, argv: list[str] | None = None, budget_fit: BudgetFit | None = None) -> TrainResult:
    """Train LoRA with mlx-lm on `cfg` (same keys and run folder as the torch backend)."""
    t_start = time.perf_counter()
    _check(cfg)
    from tickerpulse.models.mlx import import_mlx, load_mlx

    mx = import_mlx()
    nn = require("mlx.nn", "the MLX backend")
    optim = require("mlx.optimizers", "the MLX backend")
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.tuner.trainer import default_loss, evaluate, iterate_batches
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
        n = next((i for i, r in enumerate(split_rows or [], 1) if "train_through" in r), None)
        if n is not None:
            raise ConfigError(f"backend mlx: {split} row {n} has train_through, which mlx-lm's datasets cannot cut "
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
    sinks: list[Any] = [ConsoleSink(steps), JsonlSink(run / METRICS)]
    sinks += build_trackers(tracker_names(cfg.report_to, cfg.wandb), project=cfg.project_name or cfg.wandb or
                            "tickerpulse", run_dir=run.path, config=cfg.model_dump(mode="json"))
    reporter = Reporter(sinks)
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

    def state_np() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        mlx_w = {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.trainable_parameters())}
        return mlx_w, mlx_to_peft_weights(mlx_w)[0]

    def save(name: str, meta: dict[str, Any], best: bool) -> None:
        import torch

        _, peft_w = state_np()
        tensors = {k: torch.from_numpy(v) for k, v in peft_w.items()}
        meta = {**meta, "kind": "peft", "fine_tune_type": "lora", "backend": "mlx"}
        if name != BEST:
            run.save_weights(name, tensors, meta)
        if best:
            run.save_best(tensors, meta, lora_config, n_blocks=n_blocks)

    st = LoopState()
    extra: dict[str, Any] = {}

    def val_loss(split: str, num_batches: int) -> float:
        ds = sets[split]
        loss = evaluate(model, ds, cfg.batch_size, num_batches, cfg.max_seq_length,
                        iterate_batches=partial(iterate_batches, seed=cfg.seed))
        model.train()
        return loss

    def validate() -> bool:
        if sets["valid"] is None:
            return False
        loss = val_loss("valid", cfg.val_batches)
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss is {loss} at step {st.step}")
        improved = loss < st.best_val_loss - cfg.early_stopping_min_delta
        if improved:
            st.best_val_loss, st.best_step, st.bad_evals = loss, st.step, 0
            save(BEST, {"step": st.step, "val_loss": loss}, best=True)
        else:
            st.bad_evals += 1
        st.first_val_loss = loss if st.first_val_loss is None else st.first_val_loss
        st.last_val_loss = loss
        st.history.append({"step": st.step, "val_loss": loss})
        reporter.log({"kind": "val", "step": st.step, "val_loss": loss, "val_ppl": math.exp(min(loss, 50)),
                      "is_best": improved, "best_step": st.best_step})
        run.write_summary(summary("running"))
        return cfg.early_stopping_patience is not None and st.bad_evals >= cfg.early_stopping_patience

    def summary(status: str) -> dict[str, Any]:
        return {
            "status": status, "backend": "mlx", "base_model": cfg.model, "base_model_path": str(model_dir),
            "fine_tune_type": "lora", "step": st.step, "total_steps": steps, "time_budget_s": effective_budget(st, cfg),
            "time_budget_fitted": st.fitted_budget is not None,
            "best_step": st.best_step,
            "best_val_loss": None if math.isinf(st.best_val_loss) else st.best_val_loss, "best_adapter": BEST,
            "first_val_loss": st.first_val_loss, "last_val_loss": st.last_val_loss,
            "stopped_early": st.stopped_early, "train_tokens": st.train_tokens, "trained_tokens": st.trained_tokens,
            "tokens_per_sec": st.train_tokens / st.train_time if st.train_time else None,
            "peak_memory_mb": round(max(mx.get_peak_memory() / 2**20, peak_memory_mb("cpu")), 1),
            "train_time_s": round(st.train_time, 2), "wall_time_s": round(time.perf_counter() - t_start, 2),
            "device": device, "trainable_params": trainable, "total_params": total,
            "trained_layers": [layers[0], layers[-1]], "eos_token": tokenizer.eos_token,
            "val_history": st.history,
            "host": {"platform": platform.platform(), "python": sys.version.split()[0], "mlx": mx.__version__},
            **extra,
        }

    status = "not_trained"
    try:
        if cfg.train:
            status = "finished"
            opt = _optimizer(cfg, optim)
            cache_threshold = 0 if cfg.clear_cache_threshold is None else cfg.clear_cache_threshold  # mlx-lm's 0
            lr_at = build_schedule(cfg, steps)
            loss_and_grad = nn.value_and_grad(model, default_loss)
            batches = iterate_batches(sets["train"], cfg.batch_size, cfg.max_seq_length, loop=True, seed=cfg.seed)
            model.train()
            validate()
            window = {"loss": 0.0, "targets": 0, "tokens": 0, "time": 0.0, "grad_norm": 0.0, "steps": 0}
            budget = effective_budget(st, cfg)
            while st.step < steps and not st.stopped_early and not out_of_time(st, budget):
                t0 = time.perf_counter()
                lr = lr_at(schedule_position(st.step, st.train_time, steps, budget))
                grads, loss_sum, ntoks, tokens = None, mx.array(0.0), mx.array(0), 0
                for _ in range(cfg.grad_accumulation_steps):
                    batch, lengths = next(batches)
                    (lv, nt), g = loss_and_grad(model, batch, lengths)
                    g = tree_map(lambda x, n=nt: x * n, g)
                    grads = g if grads is None else tree_map(mx.add, grads, g)
                    loss_sum, ntoks = loss_sum + lv * nt, ntoks + nt
                    tokens += int(lengths[:, 1].sum().item())
                grads = tree_map(lambda x: x / ntoks, grads)
                gnorm = mx.array(math.nan)
                if cfg.max_grad_norm:
                    grads, gnorm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
                opt.learning_rate = lr
                opt.update(model, grads)
                mx.eval(model.trainable_parameters(), opt.state, loss_sum, ntoks, gnorm)
                if mx.get_cache_memory() > cache_threshold:
                    mx.clear_cache()
                st.step += 1
                dt = time.perf_counter() - t0
                n_t, loss = int(ntoks.item()), float((loss_sum / ntoks).item())
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {st.step}: lower learning_rate or check data")
                st.train_time += dt
                st.train_tokens += tokens
                st.trained_tokens += n_t
                budget = refit_budget(st, cfg, budget_fit, reporter)
                for k, v in (("loss", loss * n_t), ("targets", n_t), ("tokens", tokens), ("time", dt),
                             ("grad_norm", float(gnorm.item())), ("steps", 1)):
                    window[k] += v
                last = st.step == steps or out_of_time(st, budget)
                if st.step % cfg.steps_per_report == 0 or last:
                    reporter.log({"kind": "train", "step": st.step,
                                  "loss": window["loss"] / max(window["targets"], 1), "lr": lr,
                                  "tokens_per_sec": window["tokens"] / max(window["time"], 1e-9),
                                  "trained_tokens": window["targets"], "tokens": window["tokens"],
                                  "grad_norm": window["grad_norm"] / window["steps"],
                                  "peak_memory_mb": round(peak_memory_mb("cpu"), 1)})
                    window = {k: 0 if k in ("targets", "tokens", "steps") else 0.0 for k in window}
                if st.step % cfg.steps_per_eval == 0 or last:
                    st.stopped_early = validate()
                    if st.stopped_early:
                        reporter.event(f"early stopping at step {st.step}: no val improvement > "
                                       f"{cfg.early_stopping_min_delta} for {st.bad_evals} evaluations; best step "
                                       f"{st.best_step} (val loss {st.best_val_loss:.4f})", st.step)
                if st.step % cfg.save_every == 0 or last or st.stopped_early:
                    meta = {"step": st.step}
                    if sets["valid"] is None:  # no validation data: the newest weights are the result
                        st.best_step = st.step
                        save(checkpoint_name(st.step), meta, best=True)
                    else:
                        save(checkpoint_name(st.step), meta, best=False)
                    run.write_summary(summary("running"))
                    run.plot()
            if st.stopped_early:
                status = "stopped_early"
            elif st.step < steps:
                status = "time_budget"
                reporter.event(f"time budget of {budget:g} s reached at step {st.step} of {steps}", st.step)
        if cfg.test and sets["test"] is not None:
            if cfg.train and (run / BEST).is_file():  # evaluate what ships
                model.load_weights(str(run / BEST), strict=False)
            loss = val_loss("test", cfg.test_batches)
            reporter.log({"kind": "test", "step": st.step, "test_loss": loss, "test_ppl": math.exp(min(loss, 50))})
            extra.update(test_loss=loss, test_ppl=math.exp(min(loss, 50)))
    except KeyboardInterrupt:
        status = "interrupted"
        if st.step > 0:
            save(checkpoint_name(st.step), {"step": st.step}, best=False)
    finally:
        if cfg.train or cfg.test:
            run.write_summary(summary(status))
            run.plot()
        reporter.close()
        block_type.__call__ = block_call
    if status == "interrupted":
        raise KeyboardInterrupt
    return TrainResult(run.path, summary(status))
