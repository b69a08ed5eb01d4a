"""Where training metrics go: the console (rich live progress), metrics.jsonl, and optional trackers.

Every sink is a `MetricSink` (a small Protocol, as torchtune's `MetricLoggerInterface`): `log(record)` with
a flat dict that has a `kind` ("train", "val", "test", "event") and a `step`, and `close()`.
W&B, SwanLab, MLflow and TensorBoard are imported only when asked for (`report_to`), through
`tickerpulse._optional.require`, so a missing tracker is an error naming the extra to install.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tickerpulse._optional import require
from tickerpulse.config import ConfigError
from tickerpulse.train.config import REPORT_TO, TrainConfig
from tickerpulse.train.run_folder import METRICS


class MetricSink(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per record to metrics.jsonl (flushed at once, so a crash loses nothing)."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _fmt_mem(mb: float | None) -> str:
    return "-" if mb is None else f"{mb / 1024:.2f}GB" if mb >= 1024 else f"{mb:.0f}MB"


class ConsoleSink:
    """Live progress bar with loss, val loss, lr, tokens/s, peak memory and ETA on a terminal; one line per
    report otherwise (logs, CI, pytest)."""

    def __init__(self, total_steps: int, start_step: int = 0, console: Console | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal
        self.fields = {"loss": "-", "val": "-", "lr": "-", "tps": "-", "mem": "-"}
        self.progress: Progress | None = None
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  lr {task.fields[lr]}  "
                           "{task.fields[tps]} tok/s  mem {task.fields[mem]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, **self.fields)
            self.progress.start()

    def log(self, record: dict[str, Any]) -> None:
        kind, step = record.get("kind"), record.get("step")
        if kind == "train":
            self.fields.update(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                               tps=f"{record['tokens_per_sec']:.0f}", mem=_fmt_mem(record.get("peak_memory_mb")))
            line = (f"step {step}: loss {record['loss']:.4f}, lr {record['lr']:.3e}, "
                    f"{record['tokens_per_sec']:.0f} tok/s, grad norm {record.get('grad_norm', float('nan')):.3f}, "
                    f"peak mem {_fmt_mem(record.get('peak_memory_mb'))}")
        elif kind == "val":
            self.fields["val"] = f"{record['val_loss']:.4f}"
            best = " (best)" if record.get("is_best") else ""
            marked = record.get("val_weighted_token_loss")
            marked = "" if marked is None else f", weighted-token loss {marked:.4f}"
            line = f"step {step}: val loss {record['val_loss']:.4f}, ppl {record['val_ppl']:.3f}{marked}{best}"
        elif kind == "test":
            line = f"test loss {record['test_loss']:.4f}, ppl {record['test_ppl']:.3f} ({record['test_tokens']} tokens)"
        else:
            line = str(record.get("message", record))
        if self.progress is not None:
            self.progress.update(self.task, completed=step if kind == "train" else None, **self.fields)
            if kind != "train":
                self.progress.console.print(line)
        else:
            self.console.print(line, highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class WandbSink:
    def __init__(self, project: str, run_name: str, config: dict[str, Any], run_dir: Path):
        wandb = require("wandb", "report_to: wandb")
        self.run = wandb.init(project=project, name=run_name, config=config, dir=str(run_dir))

    def log(self, record: dict[str, Any]) -> None:
        nums = {f"{record['kind']}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.run.log(nums, step=record.get("step"))

    def close(self) -> None:
        self.run.finish()


class SwanLabSink:
    """mlx-lm's SwanLab callback: one experiment named after the run folder, logs in RUN/swanlog."""

    def __init__(self, project: str, run_dir: Path, config: dict[str, Any]):
        self.swanlab = require("swanlab", "report_to: swanlab")
        self.swanlab.init(project=project, experiment_name=run_dir.name, logdir=str(run_dir / "swanlog"),
                          config=config)

    def log(self, record: dict[str, Any]) -> None:
        nums = {f"{record['kind']}/{k}": v for k, v in record.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        self.swanlab.log(nums, step=record.get("step"))

    def close(self) -> None:
        self.swanlab.finish()


class MlflowSink:
    def __init__(self, experiment: str, run_name: str, config: dict[str, Any]):
        self.mlflow = require("mlflow", "report_to: mlflow")
        self.mlflow.set_experiment(experiment)
        self.mlflow.start_run(run_name=run_name)
        self.mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def log(self, record: dict[str, Any]) -> None:
        nums = {f"{record['kind']}_{k}": float(v) for k, v in record.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v)}
        self.mlflow.log_metrics(nums, step=int(record.get("step") or 0))

    def close(self) -> None:
        self.mlflow.end_run()


class TensorBoardSink:
    def __init__(self, log_dir: Path):
        tb = require("torch.utils.tensorboard", "report_to: tensorboard")
        self.writer = tb.SummaryWriter(str(log_dir))

    def log(self, record: dict[str, Any]) -> None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                self.writer.add_scalar(f"{record['kind']}/{k}", v, record.get("step") or 0)

    def close(self) -> None:
        self.writer.close()


TRACKERS = REPORT_TO


def tracker_names(report_to: str | list[str] | None, wandb_project: str | None) -> list[str]:
    """Normalise `report_to` (+ mlx-lm's `wandb: project`) into a list of tracker names."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n.strip().lower() for part in names for n in part.split(",") if n.strip() and n.strip() != "none"]
    if wandb_project and "wandb" not in names:
        names.append("wandb")
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"report_to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}")
    return names


def build_trackers(names: list[str], *, project: str, run_dir: Path, config: dict[str, Any]) -> list[MetricSink]:
    run_name = f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sinks: list[MetricSink] = []
    for name in names:
        if name == "wandb":
            sinks.append(WandbSink(project, run_name, config, run_dir))
        elif name == "swanlab":
            sinks.append(SwanLabSink(project, run_dir, config))
        elif name == "mlflow":
            sinks.append(MlflowSink(project, run_name, config))
        else:
            sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    return sinks


class Reporter:
    """Fans one record out to every sink."""

    def __init__(self, sinks: list[MetricSink]):
        self.sinks = sinks

    def log(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(record)

    def event(self, message: str, step: int | None = None) -> None:
        for sink in self.sinks:
            if isinstance(sink, ConsoleSink):
                sink.log({"kind": "event", "step": step, "message": message})

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def run_reporter(cfg: TrainConfig, run_dir: Path, steps: int, start_step: int = 0) -> Reporter:
    """A run's reporter: the console, `RUN/metrics.jsonl` and the trackers `cfg.report_to` names."""
    sinks: list[MetricSink] = [ConsoleSink(steps, start_step), JsonlSink(run_dir / METRICS)]
    sinks += build_trackers(tracker_names(cfg.report_to, cfg.wandb), project=cfg.project_name or cfg.wandb or
                            "tickerpulse", run_dir=run_dir, config=cfg.model_dump(mode="json"))
    return Reporter(sinks)
