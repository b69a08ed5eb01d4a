"""Library entry points: build a training config (new run or resume) and run it on the chosen backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickerpulse.config import ConfigError, build, load_yaml
from tickerpulse.train.backends import TrainResult, get_backend
from tickerpulse.train.config import TrainConfig, load_train_config
from tickerpulse.train.run_folder import CONFIG

if TYPE_CHECKING:
    from tickerpulse.train.loop import BudgetFit


def resolve_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults < YAML < flags; with `resume: RUN` the base is RUN/config.yaml instead of a YAML file.

    A resumed run keeps its folder (adapter_path = RUN); flags may change e.g. `iters` to train longer.
    """
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    resume = over.get("resume")
    if not resume:
        return load_train_config(path, over)
    run_cfg = Path(resume) / CONFIG
    if not run_cfg.is_file():
        raise ConfigError(f"--resume {resume}: no {CONFIG} there (is it a run folder?)")
    if path:
        raise ConfigError("--resume continues a run with its own config.yaml: drop --config (flags still apply)")
    base = load_yaml(run_cfg)
    over["adapter_path"] = str(resume)
    return build(TrainConfig, base, over, source=str(run_cfg))


def train(cfg: TrainConfig, argv: list[str] | None = None, budget_fit: BudgetFit | None = None) -> TrainResult:
    """Train with `cfg.backend` (auto = mlx on Apple Silicon with mlx installed, else torch).

    `budget_fit(tokens_per_sec, step_seconds_spent) -> step seconds` may shorten `time_budget` once the
    throughput is measured (a caller with a wall-clock deadline, like the recipe)."""
    return get_backend(cfg.backend).train(cfg, argv=argv, budget_fit=budget_fit)
