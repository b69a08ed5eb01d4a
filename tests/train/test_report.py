"""Metric sinks: console lines, metrics.jsonl, and trackers that are imported only when asked for."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
from rich.console import Console

from tickerpulse._optional import MissingDependency
from tickerpulse.config import ConfigError
from tickerpulse.train.report import ConsoleSink, JsonlSink, Reporter, build_trackers, tracker_names


def test_tracker_names():
    assert tracker_names("wandb, tensorboard", None) == ["wandb", "tensorboard"]
    assert tracker_names(["mlflow"], "my-project") == ["mlflow", "wandb"]  # mlx-lm's `wandb: project` key
    assert tracker_names(None, None) == [] and tracker_names("none", None) == []
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        tracker_names("comet", None)


@pytest.mark.parametrize(("name", "module"), [("wandb", "wandb"), ("mlflow", "mlflow"),
                                              ("tensorboard", "torch.utils.tensorboard")])
def test_missing_tracker_names_the_extra(name, module, tmp_path):
    try:
        present = importlib.util.find_spec(module) is not None
        if present and module == "torch.utils.tensorboard":
            present = importlib.util.find_spec("tensorboard") is not None
    except ModuleNotFoundError:
        present = False
    if present:
        pytest.skip(f"{module} is installed")
    with pytest.raises(MissingDependency, match=r"tickerpulse\[track\]"):
        build_trackers([name], project="p", run_dir=tmp_path, config={})


def test_console_and_jsonl_sinks(tmp_path):
    buf = io.StringIO()
    console = ConsoleSink(10, console=Console(file=buf, force_terminal=False, width=200))
    jsonl = JsonlSink(tmp_path / "metrics.jsonl")
    rep = Reporter([console, jsonl])
    rep.log({"kind": "train", "step": 1, "loss": 1.5, "lr": 1e-4, "tokens_per_sec": 123.4, "grad_norm": 0.5,
             "peak_memory_mb": 900.0})
    rep.log({"kind": "val", "step": 1, "val_loss": 1.25, "val_ppl": 3.49, "is_best": True})
    rep.event("hello")
    rep.close()
    out = buf.getvalue()
    assert "step 1: loss 1.5000, lr 1.000e-04, 123 tok/s" in out and "val loss 1.2500" in out and "(best)" in out
    assert "hello" in out
    recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in recs] == ["train", "val"]  # events go to the console only
