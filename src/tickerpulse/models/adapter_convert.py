"""Convert an adapter folder between PEFT (torch) and mlx-lm, without loading a model.

A tickerpulse run folder already loads in both tools (`tickerpulse.models.adapter_files`), so conversion is for
folders that come from elsewhere: `convert_run(src, out, to="mlx")` writes an mlx-lm-only folder
(`adapters.safetensors` + `adapter_config.json` with `fine_tune_type`, `num_layers`, `lora_parameters`, `model`)
from a PEFT folder or a run; `to="peft"` turns an mlx-lm adapter folder (e.g. from `mlx_lm.lora`) into a folder
that both `PeftModel.from_pretrained` and `mlx_lm --adapter-path` load, like a run folder (`tickerpulse
fuse/eval/serve --adapter OUT`). The tensor and config mapping and what cannot convert (per-module ranks,
embeddings, non-top blocks, ...) are in `tickerpulse.models.adapter_format`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tickerpulse.config import ConfigError
from tickerpulse.models.adapter_files import (
    ADAPTER_CONFIG,
    MLX_WEIGHTS,
    PEFT_WEIGHTS,
    write_adapter_files,
    write_mlx_adapter,
)
from tickerpulse.models.adapter_format import (
    MLX_KEYS,
    AdapterFormatError,
    layout,
    mlx_config_from_peft,
    mlx_to_peft_weights,
    peft_config_from_mlx,
    peft_to_mlx_weights,
)
from tickerpulse.models.adapters import read_run
from tickerpulse.models.registry import resolve


def n_blocks_of(base_model: str | None, layers: list[int]) -> int:
    """Blocks of the base model: from its config.json when it resolves locally, else max trained index + 1."""
    if base_model:
        try:
            cfg = json.loads((Path(resolve(base_model)) / "config.json").read_text())
            cfg = cfg.get("text_config", cfg)
            if "num_hidden_layers" in cfg:
                return int(cfg["num_hidden_layers"])
        except Exception:  # not available here: fall back to the weights
            pass
    return max(layers) + 1


def _load_np(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="np") as fh:
        meta = dict(fh.metadata() or {})
    return load_file(str(path)), meta


def convert_run(src: str | Path, out: str | Path, *, to: str) -> Path:
    """Convert the adapter of `src` (run folder, PEFT folder or mlx-lm folder) into folder `out`.

    Raises:
        AdapterFormatError: the adapter has no equivalent in the other tool (the message says why).
        ConfigError: bad `to`, `out` == `src`, or `src` is not the kind of folder `to` converts from.
        FileNotFoundError: `src` missing or without adapter files.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {src}")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must differ from the source folder")
    if to not in ("mlx", "peft"):
        raise ConfigError(f"--to must be 'peft' or 'mlx', not {to!r}")
    cfg_file = src / ADAPTER_CONFIG
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{src} has no {ADAPTER_CONFIG}")
    cfg = json.loads(cfg_file.read_text())
    weights_file = next((src / n for n in (PEFT_WEIGHTS, MLX_WEIGHTS) if (src / n).is_file()), None)
    if weights_file is None:
        raise FileNotFoundError(f"{src} holds no {PEFT_WEIGHTS} or {MLX_WEIGHTS}")
    state, meta = _load_np(weights_file)
    keep = {k: v for k, v in meta.items() if k in ("step", "val_loss")}
    if layout(state) == "full" or cfg.get("fine_tune_type") == "full":
        raise AdapterFormatError(f"{src}: a full fine-tune has no adapter to convert (its weights load in both "
                                 "tools under the same names)")
    if to == "mlx":
        if "peft_type" not in cfg:
            raise ConfigError(f"{src} already is an mlx-lm adapter folder")
        if layout(state) == "mlx":
            state = mlx_to_peft_weights(state)[0]
        weights, layers, keys, rank, dora = peft_to_mlx_weights(state)
        base = cfg.get("base_model_name_or_path")
        try:
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
