"""Load a local HF model folder with mlx-lm (Apple Silicon, or Linux with `mlx[cpu]`).

transformers 5 writes RoPE settings as `rope_parameters: {rope_theta, rope_type, ...}`; mlx-lm 0.32 still
reads the older top-level `rope_theta` / `rope_scaling` and silently falls back to its default theta
(10000), which gives a different model (SmolLM2 uses 100000: logits off by ~2). `load_mlx` passes the old
keys through `model_config`, so mlx-lm builds the same model transformers does.

Linux speed: the `mlx[cpu]` wheel bundles the netlib *reference* BLAS (~1 GFLOP/s for SmolLM2's matmuls:
one validation batch took minutes). `import_mlx()` first promotes torch's `libtorch_cpu` (which exports an
optimized `sgemm_`) to the global symbol scope, so mlx's bundled `cblas_sgemm` calls that instead: ~40x
faster here, same results to fp32 rounding. Only on Linux, only before mlx is first imported;
`TICKERPULSE_MLX_TORCH_BLAS=0` turns it off.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tickerpulse._optional import require


def mlx_model_config(model_dir: str | Path) -> dict[str, Any]:
    """Overrides that make mlx-lm read a transformers-5 config.json like transformers does."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters") or {}
    over: dict[str, Any] = {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        over["rope_theta"] = rope["rope_theta"]
    if "rope_scaling" not in cfg and rope.get("rope_type", "default") != "default":
        over["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return over


def import_mlx() -> Any:
    """`mlx.core`, imported after routing its BLAS to torch's on Linux (see the module docstring)."""
    if sys.platform == "linux" and "mlx.core" not in sys.modules and os.environ.get("TICKERPULSE_MLX_TORCH_BLAS",
                                                                                     "1") != "0":
        try:
            import torch

            lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
            if lib.is_file():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except (ImportError, OSError):  # no torch: mlx keeps its own (slow) BLAS
            pass
    return require("mlx.core", "the MLX backend")


def load_mlx(model_dir: str | Path, adapter_path: str | Path | None = None) -> tuple[Any, Any]:
    """(mlx model, mlx-lm TokenizerWrapper) from a local HF folder, optionally with an mlx-lm adapter folder."""
    import_mlx()
    mlx_lm = require("mlx_lm", "the MLX backend")
    return mlx_lm.load(str(model_dir), model_config=mlx_model_config(model_dir),
                       adapter_path=str(adapter_path) if adapter_path else None)


def mlx_adapter_dir(run: str | Path, scratch: str | Path) -> Path:
    """The mlx-lm adapter folder of a run: `RUN/mlx/` when the MLX backend trained it, else the PEFT adapter
    converted into `scratch` (a torch run). Raises AdapterFormatError (DoRA, full fine-tunes, ...) with the
    reason when the adapter has no mlx-lm equivalent."""
    from tickerpulse.models.adapter_convert import convert_run
    from tickerpulse.models.adapter_files import is_mlx_adapter_dir

    path = Path(run)
    if is_mlx_adapter_dir(path):
        return path
    if (path / "mlx" / "adapters.safetensors").is_file() and is_mlx_adapter_dir(path / "mlx"):
        return path / "mlx"
    return convert_run(path, Path(scratch) / "mlx-adapter", to="mlx")


def stream_generate_mlx(model: str, adapter: str | Path | None, prompt: str | list[dict[str, str]], *,
                        max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                        stop: list[str] | None = None, top_k: int = 0,
                        min_p: float = 0.0) -> Iterator[str | dict[str, Any]]:
    """Stream text pieces from mlx-lm (`mlx_lm.stream_generate`) for a chat (list of messages) or a raw prompt,
    with the base model `model` (+ the run's adapter, converted when it was trained with torch). The last item
    yielded is a stats dict (prompt/generated tokens, tokens/s, peak memory, finish reason)."""
    import tempfile

    mx = import_mlx()
    mlx_lm = require("mlx_lm", "the MLX backend")
    from mlx_lm.sample_utils import make_sampler

    from tickerpulse.models.registry import resolve

    if seed is not None:
        mx.random.seed(seed)
    with tempfile.TemporaryDirectory(prefix="tp-mlx-") as tmp:
        lm, tok = load_mlx(resolve(model), adapter_path=mlx_adapter_dir(adapter, tmp) if adapter else None)
    text = prompt if isinstance(prompt, str) else tok.apply_chat_template(prompt, add_generation_prompt=True,
                                                                          tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    sampler = make_sampler(temp=temperature, top_p=top_p if temperature > 0 and top_p < 1.0 else 0.0, min_p=min_p,
                           top_k=top_k)
    out, last, finish, sent = "", None, "length", 0
    for last in mlx_lm.stream_generate(lm, tok, ids, max_tokens=max_tokens, sampler=sampler):
        out += last.text
        cut = min((i for i in (out.find(s) for s in stop or []) if i >= 0), default=-1)
        if cut >= 0:
            if cut > sent:
                yield out[sent:cut]
            finish = "stop"
            break
        # hold back a tail that could still become a stop string
        hold = max((len(s) - 1 for s in stop or []), default=0)
        if len(out) - hold > sent:
            yield out[sent:len(out) - hold]
            sent = len(out) - hold
        finish = last.finish_reason or finish
    else:
        if len(out) > sent:
            yield out[sent:]
    yield {"prompt_tokens": last.prompt_tokens if last else len(ids), "prompt_tps": last.prompt_tps if last else 0.0,
           "generated_tokens": last.generation_tokens if last else 0,
           "tokens_per_s": last.generation_tps if last else 0.0,
           "peak_memory_mb": (last.peak_memory if last else 0.0) * 1024, "finish_reason": finish}
