"""Read training run folders and put their best adapter on a base model.

Used by generate / eval / serve / fuse. The folder layout is described in `tickerpulse.train.run_folder`;
the best adapter is `adapters.safetensors` (its header metadata records the step). A single checkpoint file
(`RUN/0000200_adapters.safetensors`) can be applied too; its config comes from the folder it sits in.
Adapter files in either tensor layout (mlx-lm's, which run folders use, or PEFT's, which older run folders
used) are read, as are a folder with only PEFT's `adapter_config.json` + `adapter_model.safetensors` (trained
elsewhere) and an mlx-lm adapter folder (`mlx_lm.lora`: LoRA/DoRA, rebuilt as the equivalent PEFT adapter).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tickerpulse.models.adapter_files import ADAPTER_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS


@dataclass
class RunInfo:
    """What a run folder says about itself."""

    path: Path
    base_model: str  # as given to `train` (built-in name, hub id or folder)
    fine_tune_type: str  # lora | dora | qlora | full
    adapter_file: Path  # the best adapter (or the checkpoint that was asked for)
    kind: str  # "peft" or "full"
    best_step: int | None = None
    best_val_loss: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # resolved TrainConfig as a dict
    summary: dict[str, Any] = field(default_factory=dict)
    tokenizer_dir: Path | None = None  # tokenizer + chat template used in training

    @property
    def peft_config_file(self) -> Path | None:
        p = self.path / ADAPTER_CONFIG
        return p if p.is_file() else None


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def read_run(run: str | Path) -> RunInfo:
    """Describe a run folder (or one adapter file inside it).

    Raises:
        FileNotFoundError: not a run folder / no adapter in it.
    """
    path = Path(run)
    adapter_file: Path | None = None
    if path.is_file():
        adapter_file, path = path, path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"adapter run folder not found: {path}")
    cfg_file, summary_file = path / "config.yaml", path / "summary.json"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if adapter_file is None:
        for name in (MLX_WEIGHTS, PEFT_WEIGHTS):
            if (path / name).is_file():
                adapter_file = path / name
                break
    if adapter_file is None:
        raise FileNotFoundError(f"{path} holds no {MLX_WEIGHTS} or {PEFT_WEIGHTS}: not a training run folder (yet?)")
    meta = _metadata(adapter_file)
    peft_cfg = json.loads((path / ADAPTER_CONFIG).read_text()) if (path / ADAPTER_CONFIG).is_file() else {}
    ftt = (config.get("fine_tune_type") or meta.get("fine_tune_type") or peft_cfg.get("fine_tune_type")
           or ("dora" if peft_cfg.get("use_dora") else "lora"))
    kind = meta.get("kind") or ("full" if ftt == "full" else "peft")
    base = (config.get("model") or peft_cfg.get("base_model_name_or_path") or summary.get("base_model")
            or peft_cfg.get("model"))
    if not base:
        raise FileNotFoundError(f"{path}: cannot tell the base model (no config.yaml or adapter_config.json)")
    step = meta.get("step")
    val = meta.get("val_loss")
    tok = path / "tokenizer"
    return RunInfo(
        path=path, base_model=str(base), fine_tune_type=ftt, adapter_file=adapter_file, kind=kind,
        best_step=int(step) if step not in (None, "None") else summary.get("best_step"),
        best_val_loss=float(val) if val not in (None, "None", "nan") else summary.get("best_val_loss"),
        config=config, summary=summary, tokenizer_dir=tok if tok.is_dir() else None,
    )


def apply_adapter(model: Any, run: str | Path, *, merge: bool = False) -> Any:
    """Put the best adapter of run folder `run` (or the adapter file `run`) on `model`.

    Args:
        model: the base HF causal LM (any dtype/device; the adapter weights follow the model's device).
        run: run folder, or a `*_adapters.safetensors` file inside one.
        merge: fold LoRA/DoRA into the base weights and return a plain transformers model.

    Returns:
        A `peft.PeftModel` (LoRA/DoRA/QLoRA) or the base model with trained blocks replaced (full).
    """
    from tickerpulse.models.adapter_format import layout

    info = read_run(run)
    state = load_peft_state(info.adapter_file)
    if info.kind == "full" or layout(state) == "full":
        missing = [k for k in state if k not in dict(model.named_parameters())]
        if missing:
            raise ValueError(f"{info.adapter_file} does not fit this model: unknown weights {missing[:3]}")
        ref = next(model.parameters())
        model.load_state_dict({k: v.to(ref.device, ref.dtype) for k, v in state.items()}, strict=False)
        return model
    from peft import get_peft_model, set_peft_model_state_dict

    if info.peft_config_file is None:
        raise FileNotFoundError(f"{info.path} has no {ADAPTER_CONFIG}: cannot rebuild the adapter layers")
    lcfg = lora_config_for(info.path, state, model)
    lcfg.inference_mode = True
    peft_model = get_peft_model(model, lcfg)
    result = set_peft_model_state_dict(peft_model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{info.adapter_file} does not fit this model: unexpected keys {result.unexpected_keys[:3]}")
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model


def load_peft_state(path: Path) -> dict[str, Any]:
    """An adapter file's tensors under PEFT's names (mlx-lm-named files are converted; exact transposes)."""
    import torch
    from safetensors.torch import load_file

    from tickerpulse.models.adapter_format import layout, to_peft_names

    if not path.is_file():
        raise FileNotFoundError(f"adapter weights not found: {path}")
    state = load_file(str(path))
    if layout(state) != "mlx":
        return state
    return {k: torch.from_numpy(v) for k, v in to_peft_names({k: v.numpy() for k, v in state.items()}).items()}


def lora_config_for(folder: Path, peft_state: dict[str, Any], model: Any) -> Any:
    """The folder's `peft.LoraConfig`: PEFT's keys when present (mlx-lm's extra keys dropped without PEFT's
    unknown-key warning), else rebuilt from mlx-lm's keys."""
    from peft import LoraConfig

    from tickerpulse.models.adapter_format import peft_config_from_mlx, peft_to_mlx_weights

    cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    if "peft_type" in cfg:
        with warnings.catch_warnings():  # mlx-lm's keys, written on purpose
            warnings.filterwarnings("ignore", message=r"Unexpected keyword arguments \['fine_tune_type'")
            return LoraConfig.from_pretrained(str(folder))
    _, layers, keys, rank, _ = peft_to_mlx_weights({k: v.float().numpy() for k, v in peft_state.items()})
    config = getattr(model, "config", None)
    n_blocks = int(getattr(getattr(config, "text_config", None) or config, "num_hidden_layers"))
    return peft_config_from_mlx(cfg, layers, keys, rank, n_blocks=n_blocks)
