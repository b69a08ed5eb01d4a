"""mlx-lm configs run, not just parse: an sgd + linear_schedule + clear_cache_threshold config trains the real
SmolLM2 through the CLI and `fuse --adapter-path` takes the run; `hf_dataset` goes through the `datasets`
package (local files here: the hub is unreachable, the code path is the same `load_dataset` call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tickerpulse.data.formats import DataError
from tickerpulse.data.hub import load_hf_dataset
from tickerpulse.train.api import resolve_config, train


def tickerpulse(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tickerpulse")
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=1200)


@pytest.mark.slow  # 229 s on 2 cores shared with other jobs: 3 steps of the real SmolLM2 and a verified fuse
def test_sgd_linear_schedule_clear_cache_config_trains_smollm2_and_fuses(sentiment_data: Path, tmp_path: Path):
    cfg = {  # mlx-lm keys only, except what keeps it small on 2 CPU cores
        "model": "smollm2-135m", "train": True, "data": str(sentiment_data), "fine_tune_type": "lora",
        "optimizer": "sgd", "optimizer_config": {"sgd": {"momentum": 0.9}}, "num_layers": 2, "batch_size": 2,
        "iters": 3, "val_batches": 1, "learning_rate": 1e-2, "steps_per_report": 1, "steps_per_eval": 3,
        "save_every": 3, "adapter_path": str(tmp_path / "run"), "max_seq_length": 320, "clear_cache_threshold": 0,
        "lr_schedule": {"name": "linear_schedule", "arguments": [1e-2, 1e-3, 3]},
        "lora_parameters": {"rank": 4, "scale": 20.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "self_attn.v_proj"]},
        "grad_checkpoint": False, "mask_prompt": True, "seed": 0, "trust_remote_code": False,
    }
    (tmp_path / "sgd.yaml").write_text(yaml.safe_dump(cfg))
    proc = tickerpulse("train", "--config", "sgd.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "optimizer sgd {'momentum': 0.9" in proc.stdout and "linear_schedule" in proc.stdout
    assert "differs from mlx-lm's defaults" in proc.stdout and "max_grad_norm: 1.0" in proc.stdout
    run = tmp_path / "run"
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in recs if r["kind"] == "train"]
    assert lrs == pytest.approx([1e-2, 1e-2 - 3e-3, 1e-2 - 6e-3])  # mlx linear_schedule at updates 0, 1, 2
    assert all(r["loss"] > 0 for r in recs if r["kind"] == "train")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optimizer"] == "sgd" and saved["clear_cache_threshold"] == 0
    assert saved["optimizer_config"]["sgd"]["momentum"] == 0.9

    fused = tickerpulse("fuse", "--adapter-path", str(run), "--save-path", str(tmp_path / "fused"), cwd=tmp_path)
    assert fused.returncode == 0, fused.stdout + fused.stderr
    assert (tmp_path / "fused" / "model.safetensors").is_file() and "verified" in fused.stderr


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hf_dataset_splits_and_features_follow_mlx_lm(tmp_path: Path):
    pytest.importorskip("datasets", reason="hf_dataset needs the datasets package: pip install 'tickerpulse[hub]'")
    rows = [{"text": f"doc {i}", "summary": f"sum {i}"} for i in range(20)]
    _jsonl(tmp_path / "billsum" / "train.jsonl", rows)
    spec = {"path": str(tmp_path / "billsum"), "prompt_feature": "text", "completion_feature": "summary"}
    train_rows, fmt = load_hf_dataset([spec], "train")  # mlx-lm's default train[:80%]
    valid_rows, _ = load_hf_dataset(spec, "valid")  # and train[-10%:]
    assert fmt == "completions" and len(train_rows) == 16 and len(valid_rows) == 2
    assert train_rows[0] == {"prompt": "doc 0", "completion": "sum 0"} and valid_rows[-1]["prompt"] == "doc 19"
    with pytest.raises(FileNotFoundError, match="test_split"):
        load_hf_dataset(spec, "test")  # mlx-lm has no default test split either
    chat = [{"conv": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(4)]
    files = {"train": str(_jsonl(tmp_path / "c" / "a.jsonl", chat)), "test": str(_jsonl(tmp_path / "c" / "b.jsonl", chat))}
    json_spec = {"path": "json", "config": {"data_files": files}, "chat_feature": "conv", "train_split": "train",
                 "test_split": "test[:2]"}
    test_rows, fmt = load_hf_dataset([json_spec], "test")
    assert fmt == "chat" and len(test_rows) == 2 and test_rows[1]["messages"][1]["content"] == "a1"
    with pytest.raises(DataError, match="differs"):  # one format per split, named
        load_hf_dataset([spec, json_spec], "train")
    _jsonl(tmp_path / "bad" / "train.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": 7}])
    with pytest.raises(DataError, match=r"bad\[train\]:2: .*completion"):
        load_hf_dataset({"path": str(tmp_path / "bad"), "train_split": "train"}, "train")
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        load_hf_dataset({"path": str(tmp_path / "missing")}, "train")


def test_hf_dataset_trains_on_the_torch_backend(tiny_model: Path, sentiment_data: Path, tmp_path: Path, one_thread):
    pytest.importorskip("datasets", reason="hf_dataset needs the datasets package")
    files = {s: str(sentiment_data / f"{s}.jsonl") for s in ("train", "valid")}
    cfg = resolve_config(None, {
        "model": str(tiny_model), "data": str(tmp_path / "nowhere"), "adapter_path": str(tmp_path / "run"),
        "hf_dataset": {"path": "json", "config": {"data_files": files}, "train_split": "train[:16]",
                       "valid_split": "valid[:4]"},
        "num_layers": 2, "batch_size": 2, "iters": 2, "val_batches": 1, "max_seq_length": 320, "dtype": "float32",
        "steps_per_eval": 2, "save_every": 2, "optimizer": "adafactor"})
    res = train(cfg)
    assert res.summary["status"] == "finished" and res.summary["step"] == 2
    data = json.loads((res.run_dir / "data.json").read_text())
    assert data["train"]["rows"] == 16 and data["valid"]["rows"] == 4 and data["train"]["path"].startswith("hf_dataset json")

    # mlx-lm's flag name on fuse (the old --adapter stays an alias)
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    out = CliRunner().invoke(app, ["fuse", "--adapter-path", str(res.run_dir), "--save-path", str(tmp_path / "fused")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "fused" / "model.safetensors").is_file() and "verified" in out.output


def test_hf_dataset_muon_and_grad_checkpoint_train_on_the_mlx_backend(tiny_model: Path, sentiment_data: Path, tmp_path: Path):
    pytest.importorskip("mlx_lm", reason="the MLX backend needs pip install 'tickerpulse[mlx]'")
    pytest.importorskip("datasets", reason="hf_dataset needs the datasets package")
    files = {s: str(sentiment_data / f"{s}.jsonl") for s in ("train", "valid")}
    cfg = resolve_config(None, {
        "backend": "mlx", "model": str(tiny_model), "adapter_path": str(tmp_path / "run"),
        "hf_dataset": [{"path": "json", "config": {"data_files": files}, "train_split": "train[:8]",
                        "valid_split": "valid[:4]"}],
        "num_layers": 2, "batch_size": 2, "iters": 2, "val_batches": 1, "max_seq_length": 320, "dtype": "float32",
        "steps_per_eval": 2, "save_every": 2, "optimizer": "muon", "clear_cache_threshold": "1GB",
        "grad_checkpoint": True, "lora_parameters": {"rank": 4}})
    from mlx_lm.models.llama import TransformerBlock  # the tiny model's block class, which mlx-lm's patch replaces

    plain = TransformerBlock.__call__
    res = train(cfg)
    assert res.summary["status"] == "finished" and res.summary["step"] == 2
    assert res.summary["last_val_loss"] is not None and res.summary["last_val_loss"] > 0
    assert TransformerBlock.__call__ is plain  # grad_checkpoint ran (mlx-lm's) and was put back


def test_report_to_swanlab_names_the_extra_when_missing(tmp_path: Path):
    import importlib.util

    from tickerpulse._optional import MissingDependency
    from tickerpulse.train.report import build_trackers, tracker_names

    assert tracker_names("wandb,swanlab", None) == ["wandb", "swanlab"]  # mlx-lm's example value
    if importlib.util.find_spec("swanlab") is not None:
        pytest.skip("swanlab is installed here: the missing-package path cannot be shown")
    with pytest.raises(MissingDependency, match=r"report_to: swanlab .*pip install 'tickerpulse\[track\]'"):
        build_trackers(["swanlab"], project="p", run_dir=tmp_path, config={})


def test_train_flags_for_mlx_lm_keys_reach_the_config(tmp_path: Path):
    """--optimizer / --clear-cache-threshold / --project-name / --[no-]trust-remote-code / --[no-]train are
    mlx-lm's flags; a bad value is one line naming the key, before any model loads."""
    proc = tickerpulse("train", "--optimizer", "lion", "--iters", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "optimizer" in proc.stderr and "Traceback" not in proc.stderr
    proc = tickerpulse("train", "--clear-cache-threshold", "lots", "--iters", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "clear_cache_threshold" in proc.stderr and "Traceback" not in proc.stderr
    cfg = resolve_config(None, {"optimizer": "sgd", "clear_cache_threshold": "2GB", "project_name": "p",
                                "trust_remote_code": True, "train": False})
    assert (cfg.optimizer, cfg.clear_cache_threshold, cfg.project_name, cfg.trust_remote_code, cfg.train) == (
        "sgd", 2 * 10**9, "p", True, False)
