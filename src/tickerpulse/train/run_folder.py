"""The self-describing run folder. Everything needed to resume, evaluate, fuse, export and serve a run.

Contract (other stages read these names; `tickerpulse.models.adapters.read_run` is the reader):

    RUN/
      config.yaml                   resolved TrainConfig (every key, after defaults < YAML < flags)
      command.txt                   the exact command line(s), one per invocation (resumes append)
      tokenizer/                    tokenizer files + chat_template.jinja used for training
      data.json                     data fingerprint: per split path, sha256, rows, format, samples, tokens
      adapter_config.json           PEFT's LoraConfig keys + mlx-lm's (fine_tune_type, num_layers, lora_parameters)
      adapter_model.safetensors     best adapter, PEFT's tensor names  -> PeftModel.from_pretrained(base, RUN)
      adapters.safetensors          best adapter, mlx-lm's tensor names -> mlx_lm.load(BASE, adapter_path=RUN);
                                    metadata: step, val_loss, kind, fine_tune_type
      0000100_adapters.safetensors  checkpoints every save_every steps (and the last step), mlx-lm's names too
                                    (`mlx_lm.lora --resume-adapter-file` takes them)
      checkpoint.pt                 resume state of the newest checkpoint (optimizer, step, RNG, data cursor)
      metrics.jsonl                 one JSON per record: kind=train|val|test, step, loss, lr, tokens/s, ...
      loss_curve.png                train and validation loss against step
      summary.json                  status, base model, best_step, best_val_loss, tokens/s, peak memory, ...

Both tools read a file called `adapter_config.json` from the folder they are given, so it carries both key sets:
PEFT (0.21) ignores mlx-lm's three keys with a warning, mlx-lm ignores PEFT's. `adapter_model.safetensors` and
`adapters.safetensors` hold the same numbers (LoRA factors transposed; DoRA magnitudes as they are: see
`tickerpulse.models.adapter_format`). When mlx-lm cannot express the adapter (per-module ranks, blocks that are
not the top N) the config carries PEFT's keys only. Readers (`tickerpulse.models.adapters`, resume) accept either
tensor layout in any `*adapters.safetensors`, so run folders written before this layout still load.

For full fine-tuning `adapters.safetensors` holds the trained block weights under their HF names (which are
mlx-lm's too) and adapter_config.json only mlx-lm's keys (`fine_tune_type: full`): plain PEFT cannot load it,
`apply_adapter` and mlx-lm can.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tickerpulse.models.adapter_format import (
    AdapterFormatError,
    full_mlx_config,
    layout,
    mlx_config_from_peft,
    peft_to_mlx_weights,
    to_peft_names,
)

CONFIG = "config.yaml"
COMMAND = "command.txt"
TOKENIZER = "tokenizer"
DATA = "data.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
BEST = "adapters.safetensors"
STATE = "checkpoint.pt"
METRICS = "metrics.jsonl"
PLOT = "loss_curve.png"
SUMMARY = "summary.json"


def checkpoint_name(step: int) -> str:
    return f"{step:07d}_adapters.safetensors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunFolder:
    """Writes the files of one run (see the module docstring for the names)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def prepare(self, *, resume: bool) -> None:
        """Create the folder; refuse to overwrite another run's results unless resuming."""
        if not resume and (self.path / SUMMARY).exists():
            from tickerpulse.config import ConfigError

            raise ConfigError(f"{self.path} already holds a run (summary.json): pass --resume {self.path} to continue "
                              "it or choose another --adapter-path")
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        (self.path / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def append_command(self, argv: list[str] | None = None) -> None:
        line = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
        with open(self.path / COMMAND, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def save_tokenizer(self, tokenizer: Any) -> None:
        tokenizer.save_pretrained(str(self.path / TOKENIZER))

    def write_data_fingerprint(self, splits: dict[str, dict[str, Any]]) -> None:
        (self.path / DATA).write_text(json.dumps(splits, indent=2), encoding="utf-8")

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.path / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.path / SUMMARY)

    def read_summary(self) -> dict[str, Any]:
        p = self.path / SUMMARY
        return json.loads(p.read_text()) if p.exists() else {}

    # --- weights ------------------------------------------------------------------------------------
    def save_weights(self, name: str, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
        """An `*adapters.safetensors` file: PEFT-named LoRA/DoRA tensors are written under mlx-lm's names."""
        if layout(state) == "peft":
            try:
                return _save_np(self.path / name, peft_to_mlx_weights(_to_np(state))[0],
                                {"format": "mlx", **metadata})
            except AdapterFormatError:  # no mlx-lm names for it (e.g. embeddings): keep PEFT's
                pass
        return _save_torch(self.path / name, state, metadata)

    def save_best(self, state: dict[str, torch.Tensor], metadata: dict[str, Any], peft: Any | None, *,
                  n_blocks: int | None = None) -> None:
        """The best adapter in both tools' files (see the module docstring).

        Args:
            peft: the PeftModel (or its LoraConfig, then pass `n_blocks`); None for a full fine-tune.
        """
        if peft is None:
            self.save_weights(BEST, state, metadata)
            _write_json(self.path / PEFT_CONFIG, full_mlx_config(state))
            return
        lora_config = peft.peft_config["default"] if hasattr(peft, "peft_config") else peft
        if n_blocks is None:
            config = getattr(peft, "config", None)
            n_blocks = int(getattr(getattr(config, "text_config", None) or config, "num_hidden_layers"))
        write_adapter_files(self.path, state, lora_config, n_blocks=n_blocks, metadata=metadata)

    def load_weights(self, name: str) -> dict[str, torch.Tensor]:
        return load_adapter_state(self.path / name)

    # --- resume state -------------------------------------------------------------------------------
    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.path / (STATE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path / STATE)

    def load_state(self) -> dict[str, Any]:
        p = self.path / STATE
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: the run saved no checkpoint yet, nothing to resume")
        return torch.load(p, map_location="cpu", weights_only=False)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records newer than the resumed step, so a resumed run's metrics read as one run."""
        p = self.path / METRICS
        if not p.exists():
            return
        keep = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                if ln.strip() and (json.loads(ln).get("step") or 0) <= after_step and json.loads(ln).get("kind") != "test"]
        p.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    # --- plot ---------------------------------------------------------------------------------------
    def plot(self) -> Path | None:
        """loss_curve.png from metrics.jsonl: train loss and validation loss against step."""
        p = self.path / METRICS
        if not p.exists():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        train = [(r["step"], r["loss"]) for r in recs if r.get("kind") == "train"]
        val = [(r["step"], r["val_loss"]) for r in recs if r.get("kind") == "val"]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        if train:
            ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1.2)
        if val:
            ax.plot(*zip(*val), label="validation loss", color="tab:orange", marker="o", markersize=3)
            best = min(val, key=lambda sv: sv[1])
            ax.axvline(best[0], color="tab:green", linestyle=":", linewidth=1, label=f"best step {best[0]}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"{self.path.name}: {time.strftime('%Y-%m-%d %H:%M')}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = self.path / PLOT
        fig.savefig(out)
        plt.close(fig)
        return out


# --- adapter files (shared with convert-adapter) --------------------------------------------------------------
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
    arrays = _to_np(state)
    _save_np(folder / PEFT_WEIGHTS, arrays, {"format": "pt"})
    lora_config.save_pretrained(str(folder))
    cfg = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
    try:
        weights, layers, keys, rank, dora = peft_to_mlx_weights(arrays)
        mlx = mlx_config_from_peft(cfg, layers, keys, rank, n_blocks=n_blocks, dora=dora)
    except AdapterFormatError:
        weights, mlx = arrays, None
    _save_np(folder / BEST, weights, {"format": "mlx" if mlx else "pt", **metadata})
    if mlx:
        _write_json(folder / PEFT_CONFIG, {**cfg, **mlx})
    return mlx


def load_adapter_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an adapter file under PEFT's names (what `set_peft_model_state_dict` takes), whichever layout
    the file uses; full fine-tune weights as they are."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"adapter weights not found: {path}")
    state = load_file(str(path))
    if layout(state) != "mlx":
        return state
    return {k: torch.from_numpy(v) for k, v in to_peft_names({k: v.numpy() for k, v in state.items()}).items()}


def _to_np(state: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().to(torch.float32).cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            for k, v in state.items()}


def _save_np(path: Path, state: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp),
              metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)
    return path


def _save_torch(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
