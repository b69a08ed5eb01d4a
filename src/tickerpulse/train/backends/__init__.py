"""Training backends behind one interface: a module with `train(cfg: TrainConfig) -> TrainResult`.

`torch` (`train/backends/torch.py`, any platform) and `mlx` (Apple Silicon, `train/backends/mlx.py`); both run
the one loop in `tickerpulse.train.loop`, supplying its `StepBackend` (torch: `torch_steps.py`). `backend: auto` picks
mlx only on Apple Silicon with mlx installed, torch everywhere else. A backend writes the run folder described
in `tickerpulse.train.run_folder`, so every later stage works the same whichever backend trained.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickerpulse.config import ConfigError

if TYPE_CHECKING:
    from tickerpulse.data.formats import Format
    from tickerpulse.train.config import TrainConfig

BACKENDS: dict[str, str] = {
    "torch": "tickerpulse.train.backends.torch",
    "mlx": "tickerpulse.train.backends.mlx",
}


@dataclass
class TrainResult:
    """What a backend returns: the run folder and its summary.json content."""

    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def select_backend(name: str) -> str:
    """Resolve `auto`; check that an explicitly requested backend exists."""
    if name == "auto":
        if is_apple_silicon() and importlib.util.find_spec("mlx") is not None and _available("mlx"):
            return "mlx"
        return "torch"
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    if not _available(name):
        raise ConfigError(f"backend: {name} is not available in this installation (no {BACKENDS[name]} module)")
    return name


def _available(name: str) -> bool:
    return importlib.util.find_spec(BACKENDS[name]) is not None


def load_split_rows(cfg: TrainConfig, split: str, required: bool) -> tuple[list[dict[str, Any]], Format] | None:
    """(rows, format) of one split from `data`, or from mlx-lm's `hf_dataset` (`datasets.load_dataset`); None
    when the split is absent and not `required`."""
    from tickerpulse.data.formats import load_split
    from tickerpulse.data.hub import load_hf_dataset

    try:
        if cfg.hf_dataset is not None:
            return load_hf_dataset([s.model_dump() for s in cfg.hf_dataset], split)
        return load_split(cfg.data, split)
    except FileNotFoundError:
        if required:
            raise
        return None


def get_backend(name: str) -> Any:
    """The backend module for `name` (after `select_backend`)."""
    return importlib.import_module(BACKENDS[select_backend(name)])
