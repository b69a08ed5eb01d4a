"""Convert an adapter folder between PEFT (torch) and mlx-lm, without loading a model.

A tickerpulse run folder already loads in both tools (see `run_folder`), so conversion is for folders that come
from elsewhere: `convert_run(src, out, to="mlx")` writes an mlx-lm-only folder (`adapters.safetensors` +
`adapter_config.json` with `fine_tune_type`, `num_layers`, `lora_parameters`, `model`) from a PEFT folder or a
run; `to="peft"` turns an mlx-lm adapter folder (e.g. from `mlx_lm.lora`) into a folder that both
`PeftModel.from_pretrained` and `mlx_lm --adapter-path` load, like a run folder (`tickerpulse fuse/eval/serve
--adapter OUT`). The tensor and config mapping and what cannot convert (per-module ranks, embeddings, non-top
blocks, ...) are in `tickerpulse.models.adapter_format`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tickerpulse.config import ConfigError
from tickerpulse.models.adapter_format import (
    MLX_KEYS,
    AdapterFormatError,
    layout,
    mlx_config_from_peft,
    mlx_to_peft_weights,
    peft_config_from_mlx,
    peft_to_mlx_weights,
)

AdapterConvertError = AdapterFormatError  # the name this module exported before the mapping moved
MLX_CONFIG = "adapter_config.json"
MLX_WEIGHTS = "adapters.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"

__all__ = ["AdapterConvertError", "convert_run", "is_mlx_adapter_dir", "mlx_to_peft_weights", "n_blocks_of",
           "peft_to_mlx_weights", "write_mlx_adapter"]


def n_blocks_of(base_model: str | None, layers: list[int]) -> int:
    """Blocks of the base model: from its config.json when it resolves locally, else max trained index + 1."""
    if base_model:
        try:
            from tickerpulse.models.registry import resolve

            cfg = json.loads((Path(resolve(base_model)) / "config.json").read_text())
            cfg = cfg.get("text_config", cfg)
            if "num_hidden_layers" in cfg:
                return int(cfg["num_hidden_layers"])
        except Exception:  # not available here: fall back to the weights
            pass
    return max(layers) + 1


def is_mlx_adapter_dir(path: Path) -> bool:
    """Does `mlx_lm --adapter-path path` load it: adapter_config.json with mlx-lm's keys and an
    `adapters.safetensors` in mlx-lm's layout (a run folder qualifies; a plain PEFT folder does not)."""
    cfg, weights = path / MLX_CONFIG, path / MLX_WEIGHTS
    if not cfg.is_file() or not weights.is_file():
        return False
    data = json.loads(cfg.read_text())
    if not isinstance(data, dict) or not all(k in data for k in ("num_layers", "lora_parameters")) and \
            data.get("fine_tune_type") != "full":
        return False
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as fh:
        return layout(fh.keys()) in ("mlx", "full")


def write_mlx_adapter(out: Path, weights: dict[str, np.ndarray], config: dict[str, Any],
                      metadata: dict[str, str] | None = None) -> Path:
    """An mlx-lm adapter folder: `adapters.safetensors` + `adapter_config.json`."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / MLX_WEIGHTS), metadata={"format": "mlx", **(metadata or {})})
    (out / MLX_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def _load_np(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="np") as fh:
        meta = dict(fh.metadata() or {})
    return load_file(str(path)), meta


def convert_run(src: str | Path, out: str | Path, *, to: str) -> Path:
    """Convert the adapter of `src` (run folder, PEFT folder or mlx-lm folder) into folder `out`.

    Raises:
        AdapterConvertError: the adapter has no equivalent in the other tool (the message says why).
        ConfigError: bad `to`, `out` == `src`, or `src` is not the kind of folder `to` converts from.
        FileNotFoundError: `src` missing or without adapter files.
    """
    from tickerpulse.train.run_folder import write_adapter_files

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {src}")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must differ from the source folder")
    if to not in ("mlx", "peft"):
        raise ConfigError(f"--to must be 'peft' or 'mlx', not {to!r}")
    cfg_file = src / MLX_CONFIG
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{src} has no {MLX_CONFIG}")
    cfg = json.loads(cfg_file.read_text())
    weights_file = next((src / n for n in (PEFT_WEIGHTS, MLX_WEIGHTS) if (src / n).is_file()), None)
    if weights_file is None:
        raise FileNotFoundError(f"{src} holds no {PEFT_WEIGHTS} or {MLX_WEIGHTS}")
    state, meta = _load_np(weights_file)
    keep = {k: v for k, v in meta.items() if k in ("step", "val_loss")}
    if layout(state) == "full" or cfg.get("fine_tune_type") == "full":
        raise AdapterConvertError(f"{src}: a full fine-tune has no adapter to convert (its weights load in both "
                                  "tools under the same names)")
    if to == "mlx":
        if "peft_type" not in cfg:
            raise ConfigError(f"{src} already is an mlx-lm adapter folder")
        if layout(state) == "mlx":
            state = mlx_to_peft_weights(state)[0]
        weights, layers, keys, rank, dora = peft_to_mlx_weights(state)
        base = cfg.get("base_model_name_or_path")
        try:
            from tickerpulse.models.adapters import read_run

            base = read_run(src).base_model
        except FileNotFoundError:
            pass
        mlx = mlx_config_from_peft(cfg, layers, keys, rank, n_blocks=n_blocks_of(base, layers), dora=dora)
        return write_mlx_adapter(out, weights, {**mlx, "model": base}, keep)
    if "peft_type" in cfg:
        raise ConfigError(f"{src} is not an mlx-lm adapter folder (its adapter_config.json is PEFT's)")
    if not all(k in cfg for k in MLX_KEYS[1:]):
        raise ConfigError(f"{src} is not an mlx-lm adapter folder (no adapter_config.json with lora_parameters)")
    peft_state, layers, keys, rank, _ = mlx_to_peft_weights(state)
    lcfg = peft_config_from_mlx(cfg, layers, keys, rank, n_blocks=n_blocks_of(cfg.get("model"), layers))
    write_adapter_files(out, peft_state, lcfg, n_blocks=n_blocks_of(cfg.get("model"), layers),
                        metadata={**keep, "kind": "peft", "fine_tune_type": cfg.get("fine_tune_type", "lora")})
    return out
