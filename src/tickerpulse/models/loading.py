"""Load a resolved base model and its tokenizer with the right device and dtype.

dtype "auto": fp32 on CPU, bf16 on CUDA (when supported) or fp16 on MPS. Training code may choose bf16
for a frozen base on a CPU with avx512_bf16 itself; inference defaults stay exact, unless a model folder
declares in `serving.json` that it was calibrated and evaluated in bf16 on CPU (the recipe's student): then
"auto" loads it in bf16 on CPUs with native bf16, so serving runs what the model card measured.
"""

from __future__ import annotations

import json
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


SERVING_FILE = "serving.json"
CPU_DTYPES = ("float32", "bfloat16")


def pick_dtype(dtype: str = "auto", device: str = "cpu", folder: str | Path | None = None) -> Any:
    """Map a dtype name to torch.dtype; "auto" depends on the device (and on CPU, on `folder`'s serving.json)."""
    import torch

    if dtype != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    if folder is not None and declared_cpu_dtype(folder) == "bfloat16" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def declared_cpu_dtype(folder: str | Path) -> str | None:
    """`cpu_dtype` of the folder's serving.json (None when absent).

    Raises:
        ValueError: the file is not JSON or names a dtype other than float32/bfloat16.
    """
    path = Path(folder) / SERVING_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("cpu_dtype")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a JSON object ({e})") from e
    return _checked_cpu_dtype(value, f"{path}: ")


def write_serving_dtype(folder: str | Path, cpu_dtype: str, why: str, **more: str) -> Path:
    """Declare the dtype a model folder is served in by "auto" on CPUs with native bf16 (see the module doc),
    plus `more` facts the serving engine reads (`declared_serving`): the recipe writes the prompt version the
    model was trained with and the kind of reasoning it gives."""
    _checked_cpu_dtype(cpu_dtype)
    path = Path(folder) / SERVING_FILE
    path.write_text(json.dumps({"cpu_dtype": cpu_dtype, "why": why, **more}, indent=2) + "\n")
    return path


def declared_serving(folder: str | Path | None, key: str) -> str | None:
    """A string field of the folder's serving.json (`prompt_version`, `reasoning`), None when absent or
    not a string (a missing or unreadable file included: the caller's default applies)."""
    if folder is None:
        return None
    path = Path(folder) / SERVING_FILE
    try:
        value = json.loads(path.read_text()).get(key) if path.is_file() else None
    except (json.JSONDecodeError, AttributeError, OSError):
        return None
    return value if isinstance(value, str) else None


def _checked_cpu_dtype(value: Any, where: str = "") -> str:
    if value not in CPU_DTYPES:
        raise ValueError(f"{where}cpu_dtype must be one of {', '.join(CPU_DTYPES)}, got {value!r}")
    return value


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 / amx), where a bf16 frozen base pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False):
    """Tokenizer of a model, with a pad token set (EOS when the model has none)."""
    from transformers import AutoTokenizer

    folder = resolve(str(name_or_path))
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
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
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(dtype, dev, folder))
    tok = load_tokenizer(folder)
    if adapter is not None:
        from tickerpulse.models.adapters import apply_adapter

        model = apply_adapter(model, adapter)
    model.to(dev).eval()
    return model, tok
