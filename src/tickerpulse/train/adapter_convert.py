"""Convert LoRA adapters between PEFT (torch) and mlx-lm formats, both ways, without loading a model.

The two formats hold the same low-rank update with transposed factors and a different scale:

    PEFT    base_model.model.model.layers.N.<path>.lora_A.weight  (r, in)   lora_B.weight (out, r)
            y = W x + (lora_alpha / r) * B A x          (use_rslora: lora_alpha / sqrt(r))
    mlx-lm  model.layers.N.<path>.lora_a  (in, r)        lora_b (r, out)
            y = W x + scale * (x a) b

so `lora_a = A.T`, `lora_b = B.T`, `scale = lora_alpha / r`. mlx-lm puts LoRA on the same `keys` (paths
inside a block, e.g. `self_attn.q_proj`) of the top `num_layers` blocks; its `adapter_config.json` holds
`fine_tune_type`, `num_layers` and `lora_parameters: {rank, scale, dropout, keys}`.

Supported: plain LoRA on linear layers inside decoder blocks named `model.layers.N` (Llama, Mistral, Qwen2/3,
Gemma, Phi-3, SmolLM... where HF and mlx-lm use the same names) with the same rank and alpha everywhere.
Refused with a clear error: DoRA, full fine-tuning, per-module rank/alpha patterns, adapters on embeddings
or the LM head, `modules_to_save`, bias training, and PEFT layer selections that are not the top N blocks
(mlx-lm can only adapt the last N).

`convert_run(src, out, to=...)`: a tickerpulse run folder or a PEFT folder -> an mlx-lm adapter folder
(`mlx_lm.generate --adapter-path OUT`), or an mlx-lm adapter folder -> a PEFT folder that
`tickerpulse fuse/eval/serve --adapter OUT` and `PeftModel.from_pretrained` load.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from tickerpulse.config import ConfigError

MLX_CONFIG = "adapter_config.json"
MLX_WEIGHTS = "adapters.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
_MLX_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.lora_([ab])$")


class AdapterConvertError(ConfigError):
    """The adapter cannot be expressed in the other format (the message says why)."""


# --- tensors ----------------------------------------------------------------------------------------------
def peft_to_mlx_weights(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int], list[str], int]:
    """PEFT LoRA tensors -> (mlx tensors, block indices, keys inside a block, rank)."""
    out: dict[str, np.ndarray] = {}
    layers, keys, ranks = set(), set(), set()
    for name, w in state.items():
        if "lora_magnitude_vector" in name:
            raise AdapterConvertError("DoRA adapters cannot be converted (mlx-lm's DoRA stores a different "
                                      "magnitude parameter); train with fine_tune_type: lora")
        m = _PEFT_KEY.match(name)
        if m is None:
            raise AdapterConvertError(f"unsupported adapter tensor {name!r}: only LoRA on linear layers inside "
                                      "'model.layers.N' blocks converts (not embeddings, lm_head or biases)")
        idx, path, ab = int(m.group(1)), m.group(2), m.group(3)
        layers.add(idx)
        keys.add(path)
        w = np.asarray(w, dtype=np.float32)
        ranks.add(w.shape[0] if ab == "A" else w.shape[1])
        out[f"model.layers.{idx}.{path}.lora_{ab.lower()}"] = np.ascontiguousarray(w.T)
    if not out:
        raise AdapterConvertError("the adapter holds no LoRA tensors")
    if len(ranks) != 1:
        raise AdapterConvertError(f"modules have different ranks {sorted(ranks)}: mlx-lm needs one rank")
    return out, sorted(layers), sorted(keys), ranks.pop()


def mlx_to_peft_weights(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int], list[str], int]:
    """mlx-lm LoRA tensors -> (PEFT tensors, block indices, keys inside a block, rank)."""
    out: dict[str, np.ndarray] = {}
    layers, keys, ranks = set(), set(), set()
    for name, w in state.items():
        m = _MLX_KEY.match(name)
        if m is None:
            kind = "DoRA" if name.endswith(".m") else "this"
            raise AdapterConvertError(f"unsupported adapter tensor {name!r}: {kind} adapter cannot be converted "
                                      "(only LoRA on linear layers inside 'model.layers.N' blocks)")
        idx, path, ab = int(m.group(1)), m.group(2), m.group(3)
        layers.add(idx)
        keys.add(path)
        w = np.asarray(w, dtype=np.float32)
        ranks.add(w.shape[1] if ab == "a" else w.shape[0])
        out[f"{PEFT_PREFIX}model.layers.{idx}.{path}.lora_{ab.upper()}.weight"] = np.ascontiguousarray(w.T)
    if not out:
        raise AdapterConvertError("the adapter holds no LoRA tensors")
    if len(ranks) != 1:
        raise AdapterConvertError(f"modules have different ranks {sorted(ranks)}")
    return out, sorted(layers), sorted(keys), ranks.pop()


# --- configs ----------------------------------------------------------------------------------------------
def _n_blocks(base_model: str | None, layers: list[int]) -> int:
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


def mlx_config_from_peft(peft_cfg: dict[str, Any], layers: list[int], keys: list[str], rank: int,
                         base_model: str | None = None) -> dict[str, Any]:
    """An mlx-lm adapter_config.json for a PEFT LoraConfig dict (after checking mlx-lm can express it)."""
    if peft_cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterConvertError(f"peft_type {peft_cfg.get('peft_type')} is not LoRA")
    if peft_cfg.get("use_dora"):
        raise AdapterConvertError("DoRA adapters cannot be converted; train with fine_tune_type: lora")
    for key in ("rank_pattern", "alpha_pattern"):
        if peft_cfg.get(key):
            raise AdapterConvertError(f"{key} (per-module rank/alpha) has no mlx-lm equivalent")
    if peft_cfg.get("modules_to_save"):
        raise AdapterConvertError("modules_to_save (fully trained extra modules) has no mlx-lm equivalent")
    if peft_cfg.get("bias", "none") != "none":
        raise AdapterConvertError("trained biases (bias != 'none') have no mlx-lm equivalent")
    r = int(peft_cfg.get("r", rank))
    if r != rank:
        raise AdapterConvertError(f"adapter_config says r={r} but the tensors have rank {rank}")
    alpha = float(peft_cfg.get("lora_alpha", r))
    scale = alpha / (math.sqrt(r) if peft_cfg.get("use_rslora") else r)
    base = base_model or peft_cfg.get("base_model_name_or_path")
    n = _n_blocks(base, layers)
    if layers != list(range(n - len(layers), n)):
        raise AdapterConvertError(f"LoRA sits on blocks {layers[0]}..{layers[-1]} of {n} (not the top ones, or "
                                  "with gaps): mlx-lm can only adapt the last num_layers blocks")
    return {
        "fine_tune_type": "lora",
        "model": base,
        "num_layers": len(layers),
        "lora_parameters": {"rank": r, "scale": scale, "dropout": float(peft_cfg.get("lora_dropout", 0.0)),
                            "keys": keys},
    }


def peft_config_from_mlx(mlx_cfg: dict[str, Any], layers: list[int], keys: list[str], rank: int,
                         base_model: str | None = None) -> Any:
    """A `peft.LoraConfig` equivalent to an mlx-lm adapter_config.json."""
    from peft import LoraConfig

    ftt = mlx_cfg.get("fine_tune_type", "lora")
    if ftt != "lora":
        raise AdapterConvertError(f"fine_tune_type {ftt} cannot be converted (only lora)")
    lp = mlx_cfg.get("lora_parameters") or {}
    r = int(lp.get("rank", rank))
    if r != rank:
        raise AdapterConvertError(f"adapter_config says rank {r} but the tensors have rank {rank}")
    if "scale" not in lp:
        raise AdapterConvertError("mlx adapter_config.json lacks lora_parameters.scale")
    base = base_model or mlx_cfg.get("model")
    n = _n_blocks(base, layers)
    num_layers = int(mlx_cfg.get("num_layers", len(layers)))
    top = list(range(n - num_layers, n)) if 0 < num_layers < n else list(range(n))
    return LoraConfig(
        r=r, lora_alpha=float(lp["scale"]) * r, lora_dropout=float(lp.get("dropout", 0.0)), target_modules=keys,
        layers_to_transform=None if len(top) == n else top, bias="none", task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )


# --- folders ----------------------------------------------------------------------------------------------
def _load_np(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors.numpy import load_file
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        meta = dict(fh.metadata() or {})
    return load_file(str(path)), meta


def _save_np(path: Path, state: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def is_mlx_adapter_dir(path: Path) -> bool:
    """An mlx-lm adapter folder: adapter_config.json with lora_parameters/num_layers (PEFT's has peft_type)."""
    cfg = path / MLX_CONFIG
    if not cfg.is_file():
        return False
    data = json.loads(cfg.read_text())
    return "peft_type" not in data and ("lora_parameters" in data or "num_layers" in data)


def write_mlx_adapter(out: Path, weights: dict[str, np.ndarray], config: dict[str, Any],
                      metadata: dict[str, str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _save_np(out / MLX_WEIGHTS, weights, metadata)
    (out / MLX_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def write_peft_adapter(out: Path, weights: dict[str, np.ndarray], lora_config: Any,
                       metadata: dict[str, str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _save_np(out / PEFT_WEIGHTS, weights, {"format": "pt"})
    lora_config.save_pretrained(str(out))
    return out


def convert_run(src: str | Path, out: str | Path, *, to: str) -> Path:
    """Convert the adapter of `src` (run folder, PEFT folder or mlx-lm folder) into folder `out`.

    to="mlx": writes adapters.safetensors + adapter_config.json for mlx-lm.
    to="peft": writes adapter_model.safetensors + adapter_config.json (PEFT), plus adapters.safetensors and
    config.yaml-free metadata so `read_run`/`apply_adapter` accept the folder as a run.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {src}")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must differ from the source folder")
    if to == "mlx":
        if is_mlx_adapter_dir(src):
            raise ConfigError(f"{src} already is an mlx-lm adapter folder")
        from tickerpulse.models.adapters import read_run

        info = read_run(src)
        if info.kind != "peft" or info.fine_tune_type not in ("lora", "qlora"):
            raise AdapterConvertError(f"{src}: fine_tune_type {info.fine_tune_type} cannot be converted (only lora)")
        if info.peft_config_file is None:
            raise FileNotFoundError(f"{src} has no {PEFT_CONFIG}")
        state, meta = _load_np(info.adapter_file)
        weights, layers, keys, rank = peft_to_mlx_weights(state)
        peft_cfg = json.loads(info.peft_config_file.read_text())
        cfg = mlx_config_from_peft(peft_cfg, layers, keys, rank, info.base_model)
        return write_mlx_adapter(out, weights, cfg, {k: v for k, v in meta.items() if k in ("step", "val_loss")})
    if to == "peft":
        if not is_mlx_adapter_dir(src):
            raise ConfigError(f"{src} is not an mlx-lm adapter folder (no adapter_config.json with lora_parameters)")
        mlx_cfg = json.loads((src / MLX_CONFIG).read_text())
        state, meta = _load_np(src / MLX_WEIGHTS)
        weights, layers, keys, rank = mlx_to_peft_weights(state)
        lcfg = peft_config_from_mlx(mlx_cfg, layers, keys, rank)
        write_peft_adapter(out, weights, lcfg)
        keep = {k: v for k, v in meta.items() if k in ("step", "val_loss")}
        _save_np(out / MLX_WEIGHTS, weights,
                 {**keep, "kind": "peft", "fine_tune_type": "lora"})
        return out
    raise ConfigError(f"--to must be 'peft' or 'mlx', not {to!r}")
