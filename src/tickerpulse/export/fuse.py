"""Fuse a LoRA/DoRA adapter into its base: one standalone Hugging Face folder plain transformers loads.

`fuse(adapter, save_path)` loads the base (from `--model`, else the run's resolved config, else the
adapter's `base_model_name_or_path`), applies the adapter, merges it and writes safetensors, the tokenizer
with its chat template, a generation config whose EOS is the chat-turn terminator (plus the document EOS)
and pad, and `tickerpulse.json` with the provenance (base, adapter, step, checksums, verification).

Exactness: each adapted layer is merged in float64 and rounded once to the output dtype, then the written
folder is reloaded with plain `AutoModelForCausalLM` and its logits compared with base + adapter on a
sentiment prompt (`verify`). In fp32 the difference is fp32 rounding noise (< 1e-4 on SmolLM2), and a
difference above `FP32_TOLERANCE` aborts the fuse instead of shipping a broken model.

QLoRA runs: the base was quantized only during training; by default the adapter is fused into the
full-precision (dequantized) base weights the quantized ones came from, so the result is a normal fp model.
Full fine-tuning runs (trained block weights, no adapter) are written the same way: base + trained weights.
Limitation: an adapter that changes a tied embedding also changes the tied output layer (as in training).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tickerpulse.config import ConfigError
from tickerpulse.export.gguf import read_json_object
from tickerpulse.train.run_folder import sha256_file

FuseDtype = Literal["auto", "float32", "bfloat16", "float16"]
FP32_TOLERANCE = 1e-3  # far above fp32 noise (~1e-4), far below a broken merge (> 0.1)
PROBE_TEXT = "Apple beats earnings estimates; $AAPL up 5% after hours on record iPhone sales."


@dataclass
class RunInfo:
    """What a run folder (or a plain PEFT adapter folder) says about itself."""

    path: Path
    base: str | None
    step: int | None
    fine_tune_type: str | None  # lora | dora | qlora | full
    kind: str  # "peft" (merge an adapter) or "full" (trained weights replace the base's)
    quantize: str | None
    adapter_file: Path | None
    adapter_config: dict[str, Any]
    train_config: dict[str, Any] = field(default_factory=dict)
    tokenizer_dir: Path | None = None


@dataclass
class FuseResult:
    """Where the fused model went and what was checked."""

    path: Path
    base: str
    adapter: Path
    step: int | None
    dtype: str
    stop_token_ids: list[int]
    max_abs_logit_diff: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["adapter"] = str(self.path), str(self.adapter)
        return d


def read_run(adapter: str | Path) -> RunInfo:
    """Describe a training run folder, one checkpoint file in it, or a plain PEFT adapter folder.

    Run folders are read by the training stage's `tickerpulse.models.adapters.read_run` (the layout's owner);
    a folder with only PEFT's files (trained elsewhere) is read here.

    Raises:
        FileNotFoundError: no such folder/file, or nothing adapter-like in it.
    """
    path = Path(adapter).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"adapter not found: {path}")
    folder = path.parent if path.is_file() else path
    peft_cfg = read_json_object(folder / "adapter_config.json")
    try:
        from tickerpulse.models.adapters import read_run as read_training_run
    except ImportError:  # training stage not installed in this checkout: plain PEFT folders only
        read_training_run = None
    if read_training_run is not None:
        info = read_training_run(path)
        cfg = dict(info.config or {})
        return RunInfo(
            path=info.path.resolve(), base=info.base_model, step=info.best_step, fine_tune_type=info.fine_tune_type,
            kind=info.kind, quantize=cfg.get("quantize"), adapter_file=info.adapter_file, adapter_config=peft_cfg,
            train_config=cfg, tokenizer_dir=info.tokenizer_dir,
        )
    if not peft_cfg:
        raise FileNotFoundError(f"{folder} has no adapter_config.json: pass a training run folder or a PEFT adapter folder")
    weights = folder / "adapter_model.safetensors"
    return RunInfo(
        path=folder.resolve(), base=peft_cfg.get("base_model_name_or_path"), step=None,
        fine_tune_type="dora" if peft_cfg.get("use_dora") else "lora", kind="peft", quantize=None,
        adapter_file=weights if weights.is_file() else None, adapter_config=peft_cfg,
    )


def fuse(
    adapter: str | Path,
    save_path: str | Path,
    *,
    model: str | None = None,
    dtype: FuseDtype = "auto",
    verify: bool = True,
    overwrite: bool = False,
    command: list[str] | None = None,
) -> FuseResult:
    """Merge `adapter` into its base and write a standalone HF folder at `save_path`.

    Args:
        adapter: run folder from `tickerpulse train`, or any PEFT LoRA/DoRA adapter folder.
        save_path: output folder (must not exist or be empty unless `overwrite`).
        model: base model (built-in name, hub id, folder); default: the one the run was trained on.
        dtype: weights dtype written; "auto" keeps the base's own dtype.
        verify: reload the written folder and compare its logits with base + adapter (fp32).
        overwrite: replace an existing non-empty `save_path`.
        command: the command line to record in `tickerpulse.json`.

    Returns:
        FuseResult with the measured max abs logit difference (None when `verify` is off).

    Raises:
        ConfigError: no base model known, output exists, or the fused model's logits differ.
        ModelNotFound / FileNotFoundError: base or adapter missing.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tickerpulse.models import resolve
    from tickerpulse.models.loading import pick_dtype

    t0 = time.perf_counter()
    run = read_run(adapter)
    out = Path(save_path).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--save-path {out} exists and is not empty (pass --overwrite to replace it)")
    base_name = model or run.base
    if not base_name:
        raise ConfigError(f"{run.path} does not say which base it was trained on: pass --model")
    base_dir = resolve(base_name)
    out_dtype = _resolve_dtype(dtype, base_dir)

    tokenizer = _load_tokenizer(run.tokenizer_dir, base_dir)
    # Merge and verify in fp32 whatever the output dtype: the reference must be exact.
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    adapted = _apply_adapter(base, Path(adapter).expanduser()).eval()
    probe = _probe_ids(tokenizer)
    with torch.no_grad():
        reference = adapted(probe).logits if verify else None
    # a full fine-tuning run comes back as the base with its trained weights: nothing to merge
    merged = merge_exact(adapted) if run.kind == "peft" else adapted

    from tickerpulse.export.tokens import stop_token_ids

    stops = stop_token_ids(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = merged.generation_config
    gen.eos_token_id = stops[0] if len(stops) == 1 else stops
    gen.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    merged.config.pad_token_id = tokenizer.pad_token_id
    for attr in ("quantization_config",):
        if hasattr(merged.config, attr):
            delattr(merged.config, attr)
    merged = merged.to(pick_dtype(out_dtype))

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        stage = Path(tmp) / "model"
        merged.save_pretrained(stage, safe_serialization=True)
        tokenizer.save_pretrained(stage)
        diff = None
        if verify:
            diff = _verify(stage, probe, reference, out_dtype)
        card = _provenance(run, base_name, base_dir, out_dtype, stops, tokenizer, diff, probe, command)
        (stage / "tickerpulse.json").write_text(json.dumps(card, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(stage), str(out))
    return FuseResult(path=out.resolve(), base=str(base_name), adapter=run.path, step=run.step, dtype=out_dtype,
                      stop_token_ids=stops, max_abs_logit_diff=diff, seconds=time.perf_counter() - t0)


def merge_exact(peft_model: Any) -> Any:
    """Merge every adapted layer in float64, round once to the layer's dtype, and unwrap the model.

    PEFT's own `merge_and_unload` adds B@A in the weight dtype; in float64 the fused fp32 weight is the
    correctly rounded W + scale * B @ A (DoRA: the re-normalised weight), which keeps the fused model's
    logits within fp32 noise of base + adapter.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            dtype = module.get_base_layer().weight.dtype
            module.to(torch.float64)
            module.merge(safe_merge=True)
            module.to(dtype)
    return peft_model.unload()


def max_abs_logit_diff(model_a: Any, model_b: Any, input_ids: Any) -> float:
    """Max |logits_a - logits_b| over every position of `input_ids` (both models in their own dtype)."""
    import torch

    with torch.no_grad():
        a = model_a(input_ids).logits.float()
        b = model_b(input_ids).logits.float()
    return float((a - b).abs().max())


def _apply_adapter(base: Any, adapter: Path) -> Any:
    """base + adapter: the training stage's loader when present (run folders, checkpoint files), else PEFT."""
    try:
        from tickerpulse.models.adapters import apply_adapter
    except ImportError:
        apply_adapter = None
    if apply_adapter is not None:
        return apply_adapter(base, adapter)
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter)


def _load_tokenizer(tokenizer_dir: Path | None, base_dir: Path) -> Any:
    """The run's saved tokenizer (what training used) when present, else the base's."""
    from transformers import AutoTokenizer

    src = tokenizer_dir if tokenizer_dir is not None and tokenizer_dir.is_dir() else base_dir
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _probe_ids(tokenizer: Any) -> Any:
    """The real task prompt (system + user turn + generation prompt) as a [1, T] tensor."""
    from tickerpulse.task.contract import build_messages

    messages = build_messages(PROBE_TEXT, "AAPL")
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        return enc["input_ids"]
    return tokenizer("\n".join(m["content"] for m in messages), return_tensors="pt")["input_ids"]


def _verify(folder: Path, probe: Any, reference: Any, out_dtype: str) -> float:
    """Reload `folder` with plain transformers (fp32) and compare logits with base + adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    fused = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = fused(probe).logits
    diff = float((logits - reference).abs().max())
    if out_dtype == "float32" and diff > FP32_TOLERANCE:
        raise ConfigError(
            f"fused model's logits differ from base + adapter by {diff:.3g} (> {FP32_TOLERANCE}): the merge is "
            "wrong for this adapter; nothing was written"
        )
    return diff


def _resolve_dtype(dtype: str, base_dir: Path) -> str:
    if dtype != "auto":
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
        return dtype
    cfg = read_json_object(base_dir / "config.json")
    saved = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return saved if saved in ("float32", "bfloat16", "float16") else "float32"


def _provenance(run: RunInfo, base_name: str, base_dir: Path, dtype: str, stops: list[int], tokenizer: Any,
                diff: float | None, probe: Any, command: list[str] | None) -> dict[str, Any]:
    import tickerpulse

    ac = run.adapter_config
    weights = run.adapter_file
    return {
        "name": None,
        "description": f"{Path(str(base_name)).name} fused with {run.path.name}"
        + (f" (step {run.step})" if run.step is not None else ""),
        "kind": "fused",
        "base": {"model": str(base_name), "path": str(base_dir)},
        "adapter": {
            "path": str(run.path),
            "step": run.step,
            "fine_tune_type": run.fine_tune_type,
            "rank": ac.get("r"),
            "alpha": ac.get("lora_alpha"),
            "use_dora": bool(ac.get("use_dora")),
            "target_modules": ac.get("target_modules"),
            "file": str(weights) if weights else None,
            "sha256": sha256_file(weights) if weights and weights.is_file() else None,
            "train_config": run.train_config or None,
        },
        "base_quantization": run.quantize,
        "fused_into": "full-precision base (dequantized)" if run.quantize else "full-precision base",
        "dtype": dtype,
        "stop_token_ids": stops,
        "eos_token": tokenizer.eos_token,
        "pad_token_id": tokenizer.pad_token_id,
        "verify": None if diff is None else {
            "max_abs_logit_diff_fp32": diff, "probe_tokens": int(probe.shape[-1]), "probe_text": PROBE_TEXT,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tickerpulse_version": tickerpulse.__version__,
        "command": command if command is not None else sys.argv,
    }
