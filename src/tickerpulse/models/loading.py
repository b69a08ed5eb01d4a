"""Load a resolved base model and its tokenizer with the right device and dtype.

dtype "auto": fp32 on CPU, bf16 on CUDA (when supported) or fp16 on MPS. Training code may choose bf16
for a frozen base on a CPU with avx512_bf16 itself; inference defaults stay exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tickerpulse.models.registry import resolve


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    """Map a dtype name to torch.dtype; "auto" depends on the device."""
    import torch

    if dtype != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 / amx), where a bf16 frozen base pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_tokenizer(name_or_path: str | Path):
    """Tokenizer of a model, with a pad token set (EOS when the model has none)."""
    from transformers import AutoTokenizer

    folder = resolve(str(name_or_path))
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str | Path, *, device: str = "auto", dtype: str = "auto", adapter: str | Path | None = None):
    """Load (model, tokenizer) for inference, optionally with a PEFT adapter (run folder) on top.

    Args:
        name_or_path: built-in name, hub id or local folder.
        device: auto/cpu/cuda/mps.
        dtype: auto/float32/bfloat16/float16.
        adapter: a run folder (or adapter folder) whose `adapters.safetensors` is applied.
    """
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    folder = resolve(str(name_or_path))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(dtype, dev))
    tok = load_tokenizer(folder)
    if adapter is not None:
        from tickerpulse.models.adapters import apply_adapter

        model = apply_adapter(model, adapter)
    model.to(dev).eval()
    return model, tok
