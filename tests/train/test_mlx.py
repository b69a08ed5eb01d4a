"""The mlx training backend: time budget and the same config as torch, refused options.

Runs on Linux with mlx[cpu]; skipped where mlx / mlx-lm are not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tickerpulse.models.mlx import import_mlx

pytest.importorskip("mlx")
import_mlx()  # before anything imports mlx.core: torch's BLAS on Linux (see tickerpulse.models.mlx)
pytest.importorskip("mlx_lm")

from tests.models.conftest import mlx_logits  # noqa: E402

TEXT = "<|im_start|>user\n$AAPL beats earnings, shares jump 5%<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_a_time_budget_ends_training_on_both_backends(backend, sentiment_data, smollm2_path, tmp_path):
    """`time_budget` ends the run on the clock, validated and checkpointed, with the lr decayed in time."""
    from tickerpulse.train.api import resolve_config, train

    run = tmp_path / "run"
    cfg = resolve_config(None, {
        "backend": backend, "data": str(sentiment_data), "adapter_path": str(run), "num_layers": 2,
        "batch_size": 2, "max_seq_length": 320, "learning_rate": 1e-3, "iters": 100_000, "time_budget": 4.0,
        "steps_per_report": 1, "steps_per_eval": 100_000, "save_every": 100_000, "val_batches": 1,
        "lr_schedule": {"name": "cosine"}, "lora_parameters": {"rank": 4, "scale": 2.0}, "dtype": "float32",
    })
    s = train(cfg).summary
    assert s["status"] == "time_budget" and s["time_budget_s"] == 4.0 and 1 <= s["step"] < 100_000
    assert s["train_time_s"] >= 4.0
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in recs if r["kind"] == "train"]
    assert len(lrs) == s["step"] and lrs == sorted(lrs, reverse=True)
    assert s["step"] < 3 or lrs[-1] < lrs[0]
    assert [r["step"] for r in recs if r["kind"] == "val"] == [0, s["step"]]
    assert (run / f"{s['step']:07d}_adapters.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_same_config_trains_on_both_backends_and_the_run_loads_with_peft(backend, sentiment_data, smollm2_path,
                                                                          tmp_path):
    """The same TrainConfig trains a few steps on torch and on mlx; both run folders have the same layout and
    the best adapter loads through `apply_adapter` (what fuse/eval/serve use)."""
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter, read_run
    from tickerpulse.train.api import resolve_config, train

    run = tmp_path / "run"
    cfg = resolve_config(None, {
        "backend": backend, "data": str(sentiment_data), "adapter_path": str(run), "num_layers": 2,
        "batch_size": 4, "max_seq_length": 320, "learning_rate": 1e-3, "iters": 2, "steps_per_report": 1,
        "steps_per_eval": 1, "save_every": 1, "val_batches": 1, "early_stopping_patience": 3,
        "lora_parameters": {"rank": 4, "scale": 2.0}, "dtype": "float32",
    })
    res = train(cfg)
    s = res.summary
    assert s["backend"] == backend and s["status"] == "finished" and s["step"] == 2
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "loss_curve.png", "adapters.safetensors",
                 "adapter_config.json", "0000001_adapters.safetensors", "0000002_adapters.safetensors"):
        assert (run / name).is_file(), name
    kinds = {json.loads(ln)["kind"] for ln in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"train", "val"} <= kinds
    info = read_run(run)
    assert info.best_step == s["best_step"]
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32)
    model = apply_adapter(base, run).eval()
    assert sum(1 for n, _ in model.named_parameters() if "lora_B" in n) > 0
    steps = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"\n[{backend}] {s['train_time_s'] / 2:.1f} s/step, {s['tokens_per_sec']:.0f} tok/s, val loss "
          f"{s['first_val_loss']:.4f} -> {s['best_val_loss']:.4f}, train losses "
          f"{[round(r['loss'], 4) for r in steps if r['kind'] == 'train']}, wall {s['wall_time_s']:.0f}s")
    if backend != "mlx":
        return
    # the PEFT files written at save time are the adapter MLX trained: same logits as MLX with RUN/mlx
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(smollm2_path))(TEXT)["input_ids"]
    with torch.no_grad():
        torch_logits = model(torch.tensor([ids])).logits[0].numpy()
    diff = float(np.abs(mlx_logits(smollm2_path, ids, run) - torch_logits).max())
    print(f"[mlx] max |MLX(RUN) - PEFT(RUN)| logit = {diff:.2e}")
    assert diff < 1e-3


def test_generate_on_mlx_refuses_an_adapter_mlx_lm_cannot_express(tmp_path):
    """`generate --backend mlx` on an adapter mlx-lm cannot express (LoRA on the bottom block: mlx-lm adapts the
    top N): one red line and exit 2, no traceback."""
    import os
    import subprocess
    import sys

    from safetensors.numpy import save_file

    run = tmp_path / "dora"
    run.mkdir()
    (run / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "use_dora": True, "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
        "layers_to_transform": [0], "base_model_name_or_path": "smollm2-135m"}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((2, 4), "f4"),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.ones((4, 2), "f4"),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": np.ones(4, "f4")},
              str(run / "adapter_model.safetensors"))
    exe = Path(sys.executable).with_name("tickerpulse")
    proc = subprocess.run([str(exe), "generate", "--backend", "mlx", "--adapter", str(run), "--prompt", "hi"],
                          check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error:" in proc.stderr and "last num_layers" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("key,value", [("train_through", '"sentiment": "'),
                                       ("soft_target", {"after": '"sentiment": "', "also": {"neutral": 0.5}})])
def test_mlx_refuses_rows_it_cannot_cut(sentiment_data, smollm2_path, tmp_path, key, value):
    """A `train_through` or `soft_target` row is an error on mlx (mlx-lm's datasets would silently train the
    whole answer with hard labels)."""
    import shutil

    from tickerpulse.config import ConfigError
    from tickerpulse.train.api import resolve_config, train

    data = tmp_path / "data"
    shutil.copytree(sentiment_data, data)
    rows = [json.loads(ln) for ln in (data / "train.jsonl").read_text().splitlines()]
    rows[2][key] = value
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = resolve_config(None, {"backend": "mlx", "data": str(data), "adapter_path": str(tmp_path / "run"),
                                "num_layers": 2, "batch_size": 2, "iters": 1, "lora_parameters": {"rank": 4}})
    with pytest.raises(ConfigError, match=f"train row 3 has {key}"):
        train(cfg)
