"""End to end: `tickerpulse train --config ... --iters 4` writes the run folder the other stages read;
plain PEFT loads it; apply_adapter / read_run / test_loss agree with what training recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tickerpulse.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = ["config.yaml", "command.txt", "tokenizer/tokenizer.json", "tokenizer/chat_template.jinja", "data.json",
             "adapter_config.json", "adapter_model.safetensors", "adapters.safetensors",
             "0000002_adapters.safetensors", "0000004_adapters.safetensors", "checkpoint.pt", "metrics.jsonl",
             "loss_curve.png", "summary.json"]


def tickerpulse(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tickerpulse")
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(scope="module")
def cli_run(sentiment_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    cfg = yaml.safe_load((ROOT / "configs" / "lora-smollm2-sentiment.yaml").read_text())
    cfg.update(data=str(sentiment_data), adapter_path=str(work / "run"), num_layers=2, batch_size=2,
               max_seq_length=320, steps_per_eval=2, save_every=2, steps_per_report=1, val_batches=1,
               test_batches=1, dtype="float32", lr_schedule=None, learning_rate=1e-3)
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    proc = tickerpulse("train", "--config", "cfg.yaml", "--iters", "4", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trainable of" in proc.stdout and "val loss" in proc.stdout and "done (finished)" in proc.stdout
    return work / "run"


def test_cli_writes_the_run_folder(cli_run: Path):
    missing = [f for f in RUN_FILES if not (cli_run / f).exists()]
    assert not missing
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 4 and summary["total_steps"] == 4
    assert summary["best_step"] in (0, 2, 4) and summary["best_val_loss"] is not None
    assert summary["tokens_per_sec"] > 0 and summary["peak_memory_mb"] > 100 and summary["wall_time_s"] > 0
    assert summary["stop_token_ids"] == [2] and summary["eos_token"] == "<|im_end|>"
    assert summary["test_loss"] > 0 and summary["base_model"] == "smollm2-135m"
    cfg = load_train_config(cli_run / "config.yaml")  # the resolved config is a valid config again
    assert cfg.iters == 4 and cfg.num_layers == 2
    assert "--iters 4" in (cli_run / "command.txt").read_text()
    data = json.loads((cli_run / "data.json").read_text())
    assert set(data) == {"train", "valid", "test"} and len(data["train"]["sha256"]) == 64
    kinds = [json.loads(ln)["kind"] for ln in (cli_run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 4 and kinds.count("val") == 3 and kinds.count("test") == 1


def test_plain_peft_loads_the_run_and_matches_apply_adapter(cli_run: Path, smollm2_path: Path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter, read_run

    info = read_run(cli_run)
    assert info.base_model == "smollm2-135m" and info.kind == "peft" and info.fine_tune_type == "lora"
    summary = json.loads((cli_run / "summary.json").read_text())
    assert info.best_step == summary["best_step"] and info.tokenizer_dir == cli_run / "tokenizer"
    from tickerpulse.models.adapters import load_peft_state

    best = load_peft_state(cli_run / "adapters.safetensors")  # mlx-lm's names, read back as PEFT's
    peft_file = load_file(cli_run / "adapter_model.safetensors")
    assert best.keys() == peft_file.keys() and all(torch.equal(best[k], peft_file[k]) for k in best)
    if info.best_step:
        ckpt = load_peft_state(cli_run / f"{info.best_step:07d}_adapters.safetensors")
        assert all(torch.equal(best[k], ckpt[k]) for k in best)

    x = torch.tensor([[1, 9690, 198, 4093, 28, 216, 2, 198]])
    load = lambda: AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        plain = PeftModel.from_pretrained(load(), str(cli_run)).eval()(x).logits
        ours = apply_adapter(load(), cli_run)(x).logits
        merged = apply_adapter(load(), cli_run, merge=True)(x).logits
    torch.testing.assert_close(plain, ours, atol=0, rtol=0)
    torch.testing.assert_close(merged, ours, atol=1e-4, rtol=0)


def test_test_loss_matches_the_number_training_recorded(cli_run: Path, sentiment_data: Path):
    from tickerpulse.train import evaluate

    summary = json.loads((cli_run / "summary.json").read_text())
    result = evaluate.test_loss(None, cli_run, sentiment_data, batch_size=2, num_batches=1)
    assert result["loss"] == pytest.approx(summary["test_loss"], abs=1e-5)
    assert result["tokens"] == summary["test_tokens"] and result["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-4)


def test_bad_flag_is_one_red_line(tmp_path: Path):
    proc = tickerpulse("train", "--set", "lora_parameters.rnak=4", "--iters", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "rnak" in proc.stderr and "did you mean 'rank'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_shipped_config_is_valid():
    cfg = load_train_config(ROOT / "configs" / "lora-smollm2-sentiment.yaml")
    assert cfg.fine_tune_type == "lora" and cfg.lora_parameters.lora_alpha == 16 and cfg.learning_rate == 2e-4
    text = (ROOT / "configs" / "lora-smollm2-sentiment.yaml").read_text().splitlines()
    keys = [ln for ln in text if ln and not ln.startswith("#") and ":" in ln and not ln.lstrip().startswith("-")]
    assert all("#" in ln for ln in keys if not ln.rstrip().endswith(":")), "every key is commented"
    assert set(cfg.model_dump()) <= {ln.split(":")[0] for ln in text if ln and ln[0].isalpha()}
