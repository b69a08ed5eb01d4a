"""Load a local HF model folder with mlx-lm (Apple Silicon, or Linux with `mlx[cpu]`).

transformers 5 writes RoPE settings as `rope_parameters: {rope_theta, rope_type, ...}`; mlx-lm 0.32 still
reads the older top-level `rope_theta` / `rope_scaling` and silently falls back to its default theta
(10000), which gives a different model (SmolLM2 uses 100000: logits off by ~2). `load_mlx` passes the old
keys through `model_config`, so mlx-lm builds the same model transformers does.
"""

from __future__ import annotations

import json
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


def load_mlx(model_dir: str | Path, adapter_path: str | Path | None = None) -> tuple[Any, Any]:
    """(mlx model, mlx-lm TokenizerWrapper) from a local HF folder, optionally with an mlx-lm adapter folder."""
    mlx_lm = require("mlx_lm", "the MLX backend")
    return mlx_lm.load(str(model_dir), model_config=mlx_model_config(model_dir),
                       adapter_path=str(adapter_path) if adapter_path else None)
