"""Adapter folders on disk: the file names, and writers that make one folder load in both PEFT and mlx-lm.

Both tools read a file called `adapter_config.json` from the folder they are given, so `write_adapter_files`
puts both key sets in it: PEFT (0.21) ignores mlx-lm's three keys with a warning, mlx-lm ignores PEFT's.
`adapter_model.safetensors` (PEFT's tensor names) and `adapters.safetensors` (mlx-lm's) hold the same numbers;
the mapping is `tickerpulse.models.adapter_format`. When mlx-lm cannot express the adapter (per-module ranks,
blocks that are not the top N) the config carries PEFT's keys only. Training run folders
(`tickerpulse.train.run_folder`) and `convert-adapter` (`tickerpulse.models.adapter_convert`) both write with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tickerpulse.models.adapter_format import AdapterFormatError, layout, mlx_config_from_peft, peft_to_mlx_weights

ADAPTER_CONFIG = "adapter_config.json"  # the one config both tools read
PEFT_WEIGHTS = "adapter_model.safetensors"
MLX_WEIGHTS = "adapters.safetensors"  # a run folder's best adapter


def write_adapter_files(folder: str | Path, state: dict[str, Any], lora_config: Any, *, n_blocks: int,
                        metadata: dict[str, Any]) -> dict[str, Any] | None:
    """Write a LoRA/DoRA adapter so PEFT and mlx-lm both load `folder`: adapter_model.safetensors (PEFT names),
    adapters.safetensors (mlx-lm names, `metadata` in its header) and one adapter_config.json with both key sets.

    Args:
        state: PEFT-named tensors (torch or numpy).
        lora_config: the `peft.LoraConfig` (written with its own `save_pretrained`).
        n_blocks: blocks in the base model (mlx-lm's `num_layers` counts from the top).

    Returns:
        mlx-lm's keys, or None when mlx-lm cannot express the adapter (then the config has PEFT's keys only).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = to_np(state)
    save_np(folder / PEFT_WEIGHTS, arrays, {"format": "pt"})
    lora_config.save_pretrained(str(folder))
    cfg = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    try:
        weights, layers, keys, rank, dora = peft_to_mlx_weights(arrays)
        mlx = mlx_config_from_peft(cfg, layers, keys, rank, n_blocks=n_blocks, dora=dora)
    except AdapterFormatError:
        weights, mlx = arrays, None
    save_np(folder / MLX_WEIGHTS, weights, {"format": "mlx" if mlx else "pt", **metadata})
    if mlx:
        write_json(folder / ADAPTER_CONFIG, {**cfg, **mlx})
    return mlx


def write_mlx_adapter(out: Path, weights: dict[str, np.ndarray], config: dict[str, Any],
                      metadata: dict[str, str] | None = None) -> Path:
    """An mlx-lm-only adapter folder: `adapters.safetensors` + `adapter_config.json` (mlx-lm's keys)."""
    out.mkdir(parents=True, exist_ok=True)
    save_np(out / MLX_WEIGHTS, weights, {"format": "mlx", **(metadata or {})})
    write_json(out / ADAPTER_CONFIG, config)
    return out


def is_mlx_adapter_dir(path: Path) -> bool:
    """Does `mlx_lm --adapter-path path` load it: adapter_config.json with mlx-lm's keys and an
    `adapters.safetensors` in mlx-lm's layout (a run folder qualifies; a plain PEFT folder does not)."""
    cfg, weights = path / ADAPTER_CONFIG, path / MLX_WEIGHTS
    if not cfg.is_file() or not weights.is_file():
        return False
    data = json.loads(cfg.read_text())
    if not isinstance(data, dict) or not all(k in data for k in ("num_layers", "lora_parameters")) and \
            data.get("fine_tune_type") != "full":
        return False
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as fh:
        return layout(fh.keys()) in ("mlx", "full")


def to_np(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """fp32 numpy arrays of torch tensors (any device / dtype) or arrays."""
    return {k: v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state.items()}


def save_np(path: Path, state: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """A safetensors file written atomically (a reader never sees half a file); metadata values as strings."""
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp),
              metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)
    return path


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
