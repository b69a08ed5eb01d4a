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

The adapter files are written by `tickerpulse.models.adapter_files` (one `adapter_config.json` with both tools'
keys; the same numbers under PEFT's and mlx-lm's names, mapped by `tickerpulse.models.adapter_format`). Readers
(`tickerpulse.models.adapters`, resume) accept either tensor layout in any `*adapters.safetensors`, so run folders
written before this layout still load.

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

import torch
import yaml

from tickerpulse.models.adapter_files import (
    ADAPTER_CONFIG,
    MLX_WEIGHTS,
    save_np,
    to_np,
    write_adapter_files,
    write_json,
)
from tickerpulse.models.adapter_format import AdapterFormatError, full_mlx_config, layout, peft_to_mlx_weights

CONFIG = "config.yaml"
COMMAND = "command.txt"
TOKENIZER = "tokenizer"
DATA = "data.json"
BEST = MLX_WEIGHTS  # the best adapter, in mlx-lm's names
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
                return save_np(self.path / name, peft_to_mlx_weights(to_np(state))[0], {"format": "mlx", **metadata})
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
            write_json(self.path / ADAPTER_CONFIG, full_mlx_config(state))
            return
        lora_config = peft.peft_config["default"] if hasattr(peft, "peft_config") else peft
        if n_blocks is None:
            config = getattr(peft, "config", None)
            n_blocks = int(getattr(getattr(config, "text_config", None) or config, "num_hidden_layers"))
        write_adapter_files(self.path, state, lora_config, n_blocks=n_blocks, metadata=metadata)

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


def _save_torch(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)
    return path
