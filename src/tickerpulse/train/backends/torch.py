"""The PyTorch backend: setup -> fit -> summarise (-> test), writing the run folder.

Data comes from `data` (a train/valid/test folder or a hub dataset id) or mlx-lm's `hf_dataset` mapping
(`datasets.load_dataset` per split, `tickerpulse.data.hub`). Known limitations: single device only (no DDP/FSDP).
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tickerpulse.config import ConfigError
from tickerpulse.data.formats import split_files
from tickerpulse.models.loading import load_tokenizer
from tickerpulse.models.registry import resolve
from tickerpulse.train.backends import TrainResult, load_split_rows
from tickerpulse.train.collate import EncodedSplit, Encoder, stop_token_ids
from tickerpulse.train.config import TrainConfig, mlx_lm_differences
from tickerpulse.train.backends.torch_steps import (
    TorchSteps,
    batch_plan,
    evaluate_loss,
    peak_memory_mb,
    total_steps,
    use_shared_prefix,
)
from tickerpulse.train.loop import BudgetFit, LoopState, loop_summary, run_loop, seed_everything
from tickerpulse.train.packing import eval_batches, make_batch, padding_waste
from tickerpulse.train.peft_setup import TrainableModel, build_trainable_model
from tickerpulse.models.adapters import load_peft_state
from tickerpulse.train.report import Reporter, run_reporter
from tickerpulse.train.run_folder import BEST, RunFolder, sha256_file


def _encode(encoder: Encoder, cfg: TrainConfig, split: str, required: bool) -> EncodedSplit | None:
    loaded = load_split_rows(cfg, split, required)
    return None if loaded is None else encoder.encode_split(*loaded)


def _fingerprint(data: str, encoded: dict[str, EncodedSplit | None]) -> dict[str, Any]:
    files = split_files(data) if Path(data).is_dir() else {}
    out: dict[str, Any] = {}
    for split, enc in encoded.items():
        if enc is None:
            continue
        path = files.get(split)
        out[split] = {
            "path": str(path.resolve()) if path else f"{data}:{split}",
            "sha256": sha256_file(path) if path else None,
            "rows": enc.rows, "format": enc.format, "samples": len(enc.samples), "tokens": enc.tokens,
            "trained_tokens": sum(s.n_trained for s in enc.samples), "truncated": enc.truncated,
            "dropped": enc.dropped,
        }
    return out


def _summary(cfg: TrainConfig, tm: TrainableModel, model_dir: Path, st: LoopState, status: str, steps: int,
             wall: float, stop_ids: set[int], tokenizer: Any, extra: dict[str, Any]) -> dict[str, Any]:
    computed = st.computed_tokens + st.pad_tokens
    return {
        "status": status,
        "backend": "torch",
        "base_model": cfg.model,
        "base_model_path": str(model_dir),
        "fine_tune_type": cfg.fine_tune_type,
        **loop_summary(st, cfg, steps),
        "computed_tokens": st.computed_tokens,
        "computed_tokens_per_sec": st.computed_tokens / st.train_time if st.train_time else None,
        "samples_per_sec": st.step * cfg.batch_size * cfg.grad_accumulation_steps / st.train_time
        if st.train_time else None,
        "shared_prefix": use_shared_prefix(cfg, tm),
        "attention": "varlen" if tm.varlen else "sdpa-mask",
        "padding_waste": st.pad_tokens / computed if computed else 0.0,
        "peak_memory_mb": round(peak_memory_mb(tm.device), 1),
        "wall_time_s": round(wall, 2),
        "device": tm.device,
        "base_dtype": str(tm.base_dtype).replace("torch.", ""),
        "trainable_params": tm.trainable_params,
        "total_params": tm.total_params,
        "trained_layers": [tm.trained_layers[0], tm.trained_layers[-1]] if tm.trained_layers else [],
        "eos_token": tokenizer.eos_token,
        "stop_token_ids": sorted(stop_ids),
        "val_history": st.history,
        "host": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                 "threads": torch.get_num_threads()},
        **extra,
    }


def train(cfg: TrainConfig, argv: list[str] | None = None, budget_fit: BudgetFit | None = None) -> TrainResult:
    """Run one training job described by `cfg` (see docs/train.md); returns the run folder and summary."""
    t_start = time.perf_counter()
    _quiet_transformers()
    if cfg.resume_adapter_file and cfg.resume:
        raise ConfigError("use either resume (continue a run exactly) or resume_adapter_file (start from weights)")
    seed_everything(cfg.seed)
    model_dir = resolve(cfg.model)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code)
    stop_ids = stop_token_ids(tokenizer, str(model_dir))
    encoder = Encoder(tokenizer, mask_prompt=cfg.mask_prompt, max_seq_length=cfg.max_seq_length, stop_ids=stop_ids,
                      token_weights=[(w.after, w.weight) for w in cfg.token_weights])
    run = RunFolder(cfg.adapter_path)
    resuming = cfg.resume is not None
    run.prepare(resume=resuming)

    encoded = {"train": _encode(encoder, cfg, "train", required=cfg.train),
               "valid": _encode(encoder, cfg, "valid", required=False),
               "test": _encode(encoder, cfg, "test", required=cfg.test)}
    train_set, valid_set = encoded["train"], encoded["valid"]

    tm = build_trainable_model(cfg, model_dir)
    resume_state = None
    if resuming:
        resume_state = run.load_state()
        tm.load_trainable_state(load_peft_state(run / resume_state["adapter_file"]))
        run.truncate_metrics(resume_state["step"])
    elif cfg.resume_adapter_file:
        tm.load_trainable_state(load_peft_state(Path(cfg.resume_adapter_file)))

    run.write_config(cfg.model_dump(mode="json"))
    run.append_command(argv)
    run.save_tokenizer(tokenizer)
    fingerprint = _fingerprint(_data_label(cfg), encoded)
    run.write_data_fingerprint(fingerprint)

    steps = 0
    if cfg.train:
        assert train_set is not None
        plan = batch_plan(cfg, train_set.samples)
        steps = total_steps(cfg, plan)
    reporter = run_reporter(cfg, run.path, steps, resume_state["step"] if resume_state else 0)
    _header(reporter, cfg, tm, model_dir, encoded, steps, resume_state)

    extra: dict[str, Any] = {"data_sha256": {k: v["sha256"] for k, v in fingerprint.items()}}
    prior_wall = run.read_summary().get("wall_time_s", 0.0) if resuming else 0.0
    status, st = "not_trained", LoopState()
    try:
        if cfg.train:
            assert train_set is not None

            def refresh(state: LoopState, checkpoint: bool) -> None:
                wall = prior_wall + time.perf_counter() - t_start
                run.write_summary(_summary(cfg, tm, model_dir, state, "running", steps, wall, stop_ids, tokenizer, extra))
                if checkpoint:
                    run.plot()

            # flush denormals on CPU: without it step time grew ~15% over the first 120 steps of the recipe
            # (denormal arithmetic as tiny values appear in the adapter, gradients and AdamW's moments), with
            # it it stayed flat; values below ~1e-38 carry nothing for training
            ftz = tm.device == "cpu" and torch.set_flush_denormal(True)
            try:
                backend = TorchSteps(cfg, tm, train_set.samples, valid_set.samples if valid_set else [], run,
                                     pad_id=tokenizer.pad_token_id, resume_state=resume_state)
                if backend.state is not None:  # resuming
                    st = backend.state
                result = run_loop(backend, cfg, reporter, st, steps=steps, on_save=refresh, budget_fit=budget_fit)
            finally:
                if ftz:
                    torch.set_flush_denormal(False)
            status, st = result.status, result.state
        if cfg.test and encoded["test"] is not None and status != "interrupted":
            if cfg.train:  # evaluate what ships: the best adapter
                tm.load_trainable_state(load_peft_state(run / BEST))
            test = encoded["test"]
            batches = [make_batch(test.samples, idx, max_seq_length=cfg.max_seq_length,
                                  pad_id=tokenizer.pad_token_id, packing=cfg.packing,
                                  share_prefix=use_shared_prefix(cfg, tm), varlen=tm.varlen)
                       for idx in eval_batches(len(test.samples), cfg.batch_size, cfg.test_batches)]
            loss, n = evaluate_loss(tm.causal_lm, batches, tm.device)
            ppl = math.exp(min(loss, 50))
            reporter.log({"kind": "test", "step": st.step, "test_loss": loss, "test_ppl": ppl, "test_tokens": n})
            extra.update(test_loss=loss, test_ppl=ppl, test_tokens=n)
    finally:
        wall = prior_wall + time.perf_counter() - t_start
        summary = _summary(cfg, tm, model_dir, st, status, steps, wall, stop_ids, tokenizer, extra)
        if cfg.train or cfg.test:
            run.write_summary(summary)
            run.plot()
        reporter.close()
    if status == "interrupted":
        raise KeyboardInterrupt
    return TrainResult(run.path, summary)


def _data_label(cfg: TrainConfig) -> str:
    """Where the rows came from, for data.json: `data`, or the hf_dataset paths."""
    if cfg.hf_dataset is None:
        return cfg.data
    return "hf_dataset " + ",".join(s.path for s in cfg.hf_dataset)


def _quiet_transformers() -> None:
    """No weight-loading progress bars or deprecation noise in the run log (our header says what loads)."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _header(reporter: Reporter, cfg: TrainConfig, tm: TrainableModel, model_dir: Path,
            encoded: dict[str, EncodedSplit | None], steps: int, resume_state: dict[str, Any] | None) -> None:
    """The run header: what will be trained on what, so a wrong setting shows before hours are spent."""
    pct = 100 * tm.trainable_params / max(tm.total_params, 1)
    lines = [
        f"run folder {cfg.adapter_path}  (backend torch, device {tm.device}, base dtype "
        f"{str(tm.base_dtype).replace('torch.', '')}, adapters fp32, {torch.get_num_threads()} threads, "
        f"{'varlen' if tm.varlen else 'masked'} attention{', compiled blocks' if cfg.compile else ''})",
        f"model {cfg.model} -> {model_dir}",
        f"{cfg.fine_tune_type}: {tm.trainable_params:,} trainable of {tm.total_params:,} parameters ({pct:.3f}%), "
        f"blocks {tm.trained_layers[0]}..{tm.trained_layers[-1]}" + (
            f", rank {cfg.lora_parameters.rank}, alpha {cfg.lora_parameters.lora_alpha:g}, "
            f"keys {cfg.lora_parameters.keys or 'all-linear'}" if tm.kind == "peft" else ""),
        f"steps {steps} x batch {cfg.batch_size} x accum {cfg.grad_accumulation_steps}"
        + (f" or {cfg.time_budget:g} s of steps, whichever ends first" if cfg.time_budget else "")
        + f", lr {cfg.learning_rate:g}, "
        f"max_seq_length {cfg.max_seq_length}, packing {'on' if cfg.packing else 'off'}, "
        f"mask_prompt {'on' if cfg.mask_prompt else 'off'}, grad checkpoint {'on' if cfg.grad_checkpoint else 'off'}",
    ]
    for split, enc in encoded.items():
        if enc is not None:
            lines.append(f"{split}: {len(enc.samples)} samples ({enc.format}), {enc.tokens:,} tokens"
                         + "".join(f"; {n}" for n in enc.notes))
    train_set = encoded.get("train")
    if train_set is not None and train_set.samples and steps:
        plan = batch_plan(cfg, train_set.samples)
        share = use_shared_prefix(cfg, tm)
        probe = [make_batch(train_set.samples, plan.indices(k), max_seq_length=cfg.max_seq_length, pad_id=0,
                            packing=cfg.packing, share_prefix=share, varlen=tm.varlen)
                 for k in range(min(plan.per_epoch, 20))]
        shared = sum(b.n_tokens - b.n_computed for b in probe) / max(sum(b.n_tokens for b in probe), 1)
        lines.append(f"padding waste (first {len(probe)} batches): {100 * padding_waste(probe):.1f}%"
                     + (f"; shared prompt prefix saves {100 * shared:.1f}% of the tokens" if shared > 0 else ""))
    opt = getattr(cfg.optimizer_config, cfg.optimizer).model_dump(exclude_none=True)
    sched = cfg.lr_schedule.model_dump() if cfg.lr_schedule else "constant"
    if cfg.optimizer == "adafactor" and cfg.optimizer_config.adafactor.relative_step:
        sched = "relative step min(1e-2, 1/sqrt(t)) (relative_step: learning_rate and lr_schedule unused, as in mlx)"
    lines.append(f"optimizer {cfg.optimizer} {opt}" + (f", weight_decay {cfg.weight_decay:g}" if cfg.weight_decay
                                                       is not None else "") + f", lr schedule {sched}")
    diffs = mlx_lm_differences(cfg, "torch")
    if diffs:
        lines.append("differs from mlx-lm's defaults: " + "; ".join(diffs))
    if resume_state is not None:
        lines.append(f"resuming at step {resume_state['step']} from {resume_state['adapter_file']}")
    for line in lines:
        reporter.event(line)
