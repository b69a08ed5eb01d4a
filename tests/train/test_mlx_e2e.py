"""End to end through the CLI, on both training backends: `tickerpulse train --backend mlx|torch` trains the
real SmolLM2-135M for 2 steps, then the same downstream commands run on either run folder: fuse (plain
transformers loads the result), eval (a few generated items, and `--test`), generate, and serve (the real
server on a free 127.0.0.1 port: one /v1/sentiment call and one chat call against the run as an adapter).

The MLX run carries PEFT files written at save time, so every downstream command is the torch one; for the
MLX run the fused model is also checked against what MLX itself computes with the run's `mlx/` adapter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port
from tests.models.conftest import mlx_logits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TEXT = "$AAPL beats earnings, shares jump 5% after hours"


def tickerpulse(*args: str, cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tickerpulse")
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("TICKERPULSE_API_KEY", None)
    return subprocess.run([str(exe), *args], check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module", params=["mlx", "torch"])
def run(request: pytest.FixtureRequest, sentiment_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run of the given backend, trained through `tickerpulse train` (same flags for both)."""
    backend = request.param
    if backend == "mlx" and importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("mlx-lm not installed (pip install 'tickerpulse[mlx]')")
    work = tmp_path_factory.mktemp(f"e2e-{backend}")
    t0 = time.perf_counter()
    proc = tickerpulse("train", "--backend", backend, "--model", "smollm2-135m", "--data", str(sentiment_data),
                       "--adapter-path", "run", "--iters", "2", "--num-layers", "2", "--batch-size", "4",
                       "--max-seq-length", "320", "--learning-rate", "1e-3", "--steps-per-eval", "2",
                       "--val-batches", "1", "--save-every", "2", "--dtype", "float32",
                       "--set", "lora_parameters.rank=4", cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done (finished)" in proc.stdout
    print(f"\n[{backend}] train 2 steps via CLI: {time.perf_counter() - t0:.1f}s")
    return work / "run"


def test_train_writes_the_same_run_folder_on_both_backends(run: Path):
    s = json.loads((run / "summary.json").read_text())
    backend = s["backend"]
    assert s["status"] == "finished" and s["step"] == 2 and s["best_val_loss"] is not None
    for name in ("config.yaml", "command.txt", "tokenizer/tokenizer.json", "data.json", "adapter_config.json",
                 "adapter_model.safetensors", "adapters.safetensors", "0000002_adapters.safetensors",
                 "metrics.jsonl", "loss_curve.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert json.loads((run / "adapter_config.json").read_text())["lora_parameters"]["rank"] == 4  # mlx-lm's keys


def test_fuse_gives_a_plain_transformers_model(run: Path, smollm2_path: Path):
    proc = tickerpulse("fuse", "--adapter", str(run), "--save-path", str(run.parent / "fused"), cwd=run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((run.parent / "fused" / "tickerpulse.json").read_text())
    assert card["verify"]["max_abs_logit_diff_fp32"] < 1e-3
    if json.loads((run / "summary.json").read_text())["backend"] != "mlx":
        return
    # the fused torch model computes what MLX computed with the adapter it trained
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run.parent / "fused"))
    ids = tok.apply_chat_template([{"role": "user", "content": TEXT}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    fused = AutoModelForCausalLM.from_pretrained(str(run.parent / "fused"), dtype=torch.float32).eval()
    with torch.no_grad():
        t_logits = fused(torch.tensor([ids])).logits[0].numpy()
    diff = float(np.abs(mlx_logits(smollm2_path, ids, run) - t_logits).max())
    print(f"\n[mlx] max |MLX(base + RUN/mlx) - torch(fused)| logit = {diff:.2e}")
    assert diff < 1e-3


def test_eval_generated_answers_and_test_loss(run: Path, sentiment_data: Path):
    out = run.parent / "eval"
    proc = tickerpulse("eval", "--model", "smollm2-135m", "--adapter", str(run), "--data", str(sentiment_data),
                       "--limit", "3", "--batch-size", "3", "--max-tokens", "12", "--out", str(out), "--quiet",
                       cwd=run.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["metrics"]["n"] == 3 and ev["config"]["adapter"] == str(run)
    proc = tickerpulse("eval", "--model", "smollm2-135m", "--adapter", str(run), "--data", str(sentiment_data),
                       "--split", "valid", "--test", "--batch-size", "4", "--test-batches", "1", "--out",
                       str(run.parent / "testloss"), cwd=run.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loss = json.loads((run.parent / "testloss" / "test_loss.json").read_text())["loss"]
    assert 0 < loss < 5


def test_generate_streams_the_same_answer_on_torch_and_mlx(run: Path):
    """`generate` on torch (PEFT files) and with `--backend mlx` (RUN/mlx, or the torch run's adapter converted
    on the fly): the same greedy answer."""
    args = ("generate", "--adapter", str(run), "--prompt", TEXT, "--max-tokens", "8")
    proc = tickerpulse(*args, cwd=run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() and "tok/s" in proc.stderr
    if importlib.util.find_spec("mlx_lm") is None:
        return
    on_mlx = tickerpulse(*args, "--backend", "mlx", cwd=run.parent)
    assert on_mlx.returncode == 0, on_mlx.stderr[-3000:]
    assert "mlx |" in on_mlx.stderr and on_mlx.stdout == proc.stdout


def test_unsupported_fine_tune_type_on_mlx_is_a_clear_error(sentiment_data: Path, tmp_path: Path):
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("mlx-lm not installed")
    proc = tickerpulse("train", "--backend", "mlx", "--fine-tune-type", "dora", "--data", str(sentiment_data),
                       "--adapter-path", "run", "--iters", "1", cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and not (tmp_path / "run" / "adapters.safetensors").exists()
    assert "fine_tune_type dora is not supported" in proc.stdout + proc.stderr


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def test_serve_answers_sentiment_and_chat_with_the_run_as_adapter(run: Path):
    port = free_port()
    exe = Path(sys.executable).with_name("tickerpulse")
    env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
    env.setdefault("OMP_NUM_THREADS", "1")
    log_path = run.parent / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), "serve", "--adapter", f"sent={run}", "--port", str(port), "--timeout",
                                 "600"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run.parent)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=2).read()
                    break
                except OSError:
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, "tickerpulse serve did not come up"
                    time.sleep(1)
            models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=30).read())
            assert "sent" in [m["id"] for m in models["data"]]
            r = _post(url + "/v1/sentiment", {"texts": [TEXT], "mode": "fast", "model": "sent"})
            assert r["model"] == "sent" and r["results"][0]["ticker"] == "AAPL"
            assert r["results"][0]["sentiment"] in ("positive", "negative", "neutral")
            chat = _post(url + "/v1/chat/completions", {"model": "sent", "max_tokens": 8,
                                                         "messages": [{"role": "user", "content": TEXT}]})
            assert chat["model"] == "sent" and chat["choices"][0]["message"]["content"]
        finally:
            proc.terminate()
            proc.wait(30)
