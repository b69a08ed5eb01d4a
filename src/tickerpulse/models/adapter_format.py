"""LoRA / DoRA adapter tensors and configs in PEFT's and mlx-lm's layouts, and the conversion between them.

The two layouts hold the same low-rank update with transposed factors and a different scale:

    PEFT    base_model.model.model.layers.N.<path>.lora_A.weight  (r, in)   lora_B.weight (out, r)
            [DoRA: <path>.lora_magnitude_vector (out,)]
            y = W x + (lora_alpha / r) * B A x          (use_rslora: lora_alpha / sqrt(r))
    mlx-lm  model.layers.N.<path>.lora_a  (in, r)        lora_b (r, out)       [DoRA: <path>.m (out,)]
            y = W x + scale * (x a) b

so `lora_a = A.T`, `lora_b = B.T`, `m = magnitude`, `scale = lora_alpha / r`. Both DoRA variants rescale every
output row of `W + scale * B A` to the learned magnitude (norm along the input dimension), so the magnitude
vector carries over unchanged. mlx-lm puts the adapter on the same `keys` (paths inside a block, e.g.
`self_attn.q_proj`) of the top `num_layers` blocks; its `adapter_config.json` holds `fine_tune_type`,
`num_layers` and `lora_parameters: {rank, scale, dropout, keys}`.

Supported: LoRA and DoRA on linear layers inside decoder blocks named `model.layers.N` (Llama, Mistral,
Qwen2/3, Gemma, Phi-3, SmolLM... where HF and mlx-lm use the same names) with one rank and alpha everywhere.
Refused with `AdapterFormatError`: per-module rank/alpha patterns, adapters on embeddings or the LM head,
`modules_to_save`, bias training, and layer selections that are not the top N blocks (mlx-lm adapts the last N).
Pure numpy: used by the training backends, the run-folder readers and `convert-adapter` alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from tickerpulse.config import ConfigError

PEFT_PREFIX = "base_model.model."
MLX_KEYS = ("fine_tune_type", "num_layers", "lora_parameters")  # what mlx-lm's load_adapters reads

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\."
                       r"(lora_A|lora_B|lora_magnitude_vector)(?:\.default)?(?:\.weight)?$")
_MLX_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(lora_a|lora_b|m)$")
_TO_MLX = {"lora_A": "lora_a", "lora_B": "lora_b", "lora_magnitude_vector": "m"}
_TO_PEFT = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "m": "lora_magnitude_vector"}


class AdapterFormatError(ConfigError):
    """The adapter cannot be expressed in the other layout (the message says why)."""


def layout(names: Iterable[str]) -> Literal["peft", "mlx", "full", "empty"]:
    """Which layout a state dict's tensor names are in: PEFT LoRA/DoRA, mlx-lm LoRA/DoRA, or plain model
    weights (a full fine-tune, the same names in both tools)."""
    names = list(names)
    if not names:
        return "empty"
    if any("lora_A" in n or "lora_B" in n or "lora_magnitude_vector" in n or "lora_embedding" in n for n in names):
        return "peft"
    if any(n.endswith((".lora_a", ".lora_b")) for n in names):
        return "mlx"
    return "full"


def _convert(state: dict[str, Any], key: re.Pattern[str], rename: dict[str, str], magnitude: str, a_part: str,
             a_rank_axis: int, prefix: str, what: str) -> tuple[dict[str, np.ndarray], list[int], list[str], int, bool]:
    """Move every LoRA/DoRA tensor of one layout into the other: factors transposed, the magnitude vector as is."""
    out: dict[str, np.ndarray] = {}
    layers, keys, ranks, dora = set(), set(), set(), False
    for name, w in state.items():
        m = key.match(name)
        if m is None:
            raise AdapterFormatError(f"unsupported adapter tensor {name!r}: only LoRA/DoRA on linear layers inside "
                                     f"'model.layers.N' blocks converts{what}")
        idx, path, part = int(m.group(1)), m.group(2), m.group(3)
        layers.add(idx)
        keys.add(path)
        w = np.asarray(w, dtype=np.float32)
        target = f"{prefix}model.layers.{idx}.{path}.{rename[part]}"
        if part == magnitude:
            dora = True
            out[target] = np.ascontiguousarray(w)
            continue
        ranks.add(w.shape[a_rank_axis] if part == a_part else w.shape[1 - a_rank_axis])
        out[target] = np.ascontiguousarray(w.T)
    if not ranks:
        raise AdapterFormatError("the adapter holds no LoRA tensors")
    if len(ranks) != 1:
        raise AdapterFormatError(f"modules have different ranks {sorted(ranks)}: mlx-lm needs one rank")
    return out, sorted(layers), sorted(keys), ranks.pop(), dora


def peft_to_mlx_weights(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[int], list[str], int, bool]:
    """PEFT LoRA/DoRA tensors -> (mlx tensors, block indices, keys inside a block, rank, is DoRA)."""
    return _convert(state, _PEFT_KEY, _TO_MLX, "lora_magnitude_vector", "lora_A", 0, "",
                    " (not embeddings, lm_head or biases)")


def mlx_to_peft_weights(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[int], list[str], int, bool]:
    """mlx-lm LoRA/DoRA tensors -> (PEFT tensors, block indices, keys inside a block, rank, is DoRA)."""
    return _convert(state, _MLX_KEY, _TO_PEFT, "m", "lora_a", 1, PEFT_PREFIX, "")


def to_peft_names(state: dict[str, Any]) -> dict[str, Any]:
    """Any adapter state dict (PEFT, mlx-lm or full weights) with PEFT's names; arrays stay numpy."""
    return mlx_to_peft_weights(state)[0] if layout(state) == "mlx" else state


def mlx_config_from_peft(peft_cfg: dict[str, Any], layers: list[int], keys: list[str], rank: int, *,
                         n_blocks: int, dora: bool = False) -> dict[str, Any]:
    """mlx-lm's adapter_config.json keys for a PEFT LoraConfig dict (after checking mlx-lm can express it).

    Args:
        n_blocks: blocks in the base model (mlx-lm counts `num_layers` from the top).
    """
    if peft_cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterFormatError(f"peft_type {peft_cfg.get('peft_type')} is not LoRA")
    for key in ("rank_pattern", "alpha_pattern"):
        if peft_cfg.get(key):
            raise AdapterFormatError(f"{key} (per-module rank/alpha) has no mlx-lm equivalent")
    if peft_cfg.get("modules_to_save"):
        raise AdapterFormatError("modules_to_save (fully trained extra modules) has no mlx-lm equivalent")
    if peft_cfg.get("bias", "none") != "none":
        raise AdapterFormatError("trained biases (bias != 'none') have no mlx-lm equivalent")
    r = int(peft_cfg.get("r", rank))
    if r != rank:
        raise AdapterFormatError(f"adapter_config says r={r} but the tensors have rank {rank}")
    if bool(peft_cfg.get("use_dora")) != dora:
        raise AdapterFormatError(f"adapter_config says use_dora={peft_cfg.get('use_dora')} but the tensors "
                                 f"{'have' if dora else 'lack'} DoRA magnitudes")
    alpha = float(peft_cfg.get("lora_alpha", r))
    scale = alpha / (math.sqrt(r) if peft_cfg.get("use_rslora") else r)
    if layers != list(range(n_blocks - len(layers), n_blocks)):
        raise AdapterFormatError(f"the adapter sits on blocks {layers[0]}..{layers[-1]} of {n_blocks} (not the top "
                                 "ones, or with gaps): mlx-lm can only adapt the last num_layers blocks")
    return {
        "fine_tune_type": "dora" if dora else "lora",
        "num_layers": len(layers),
        "lora_parameters": {"rank": r, "scale": scale, "dropout": float(peft_cfg.get("lora_dropout", 0.0)),
                            "keys": keys},
    }


def peft_config_from_mlx(mlx_cfg: dict[str, Any], layers: list[int], keys: list[str], rank: int, *,
                         n_blocks: int, base_model: str | None = None) -> Any:
    """A `peft.LoraConfig` equivalent to an mlx-lm adapter_config.json."""
    from peft import LoraConfig

    ftt = mlx_cfg.get("fine_tune_type", "lora")
    if ftt not in ("lora", "dora"):
        raise AdapterFormatError(f"fine_tune_type {ftt} cannot be converted (only lora and dora)")
    lp = mlx_cfg.get("lora_parameters") or {}
    r = int(lp.get("rank", rank))
    if r != rank:
        raise AdapterFormatError(f"adapter_config says rank {r} but the tensors have rank {rank}")
    if "scale" not in lp:
        raise AdapterFormatError("mlx adapter_config.json lacks lora_parameters.scale")
    num_layers = int(mlx_cfg.get("num_layers", len(layers)))
    top = list(range(n_blocks - num_layers, n_blocks)) if 0 < num_layers < n_blocks else list(range(n_blocks))
    return LoraConfig(
        r=r, lora_alpha=float(lp["scale"]) * r, lora_dropout=float(lp.get("dropout", 0.0)), target_modules=keys,
        layers_to_transform=None if len(top) == n_blocks else top, bias="none", task_type="CAUSAL_LM",
        use_dora=ftt == "dora", base_model_name_or_path=base_model or mlx_cfg.get("model"),
    )


def full_mlx_config(names: Iterable[str]) -> dict[str, Any]:
    """mlx-lm's adapter_config.json keys for a full fine-tune (its weights keep their names in mlx-lm)."""
    blocks = {int(m.group(1)) for n in names if (m := re.match(r"^model\.layers\.(\d+)\.", n))}
    return {"fine_tune_type": "full", "num_layers": len(blocks)}
