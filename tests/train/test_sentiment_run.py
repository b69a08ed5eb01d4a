"""A real (short) fine-tune of SmolLM2 on sentiment chat data built from ../shared/data:
validation loss goes down, early stopping ends the run with adapters.safetensors = the best step, the
loss-curve PNG shows both curves, and the fine-tuned model stops (emits <|im_end|>) on the task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tickerpulse.task.contract import parse_answer
from tickerpulse.train.api import resolve_config, train

from .conftest import twitter_split_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train (320) / valid (16) / test (16): with only 64 training rows the best step (~1 epoch) comes
    before the model has learnt the answer format."""
    return twitter_split_folder(shared_data, tmp_path_factory.mktemp("sentiment-run"), n_train=320)


@pytest.fixture(scope="module")
def sentiment_run(run_data: Path, tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("sentiment") / "run"
    cfg = resolve_config(None, {
        "data": str(run_data), "adapter_path": str(run), "num_layers": 8, "batch_size": 4,
        "max_seq_length": 320, "learning_rate": 5e-4, "iters": 80, "steps_per_report": 1, "steps_per_eval": 4,
        "save_every": 4, "val_batches": -1, "early_stopping_patience": 2, "early_stopping_min_delta": 0.02,
        "test": True, "lora_parameters": {"rank": 8, "scale": 2.0},
    })
    return train(cfg)


def test_validation_loss_goes_down_and_early_stopping_keeps_the_best(sentiment_run):
    s, run = sentiment_run.summary, sentiment_run.run_dir
    assert s["status"] == "stopped_early" and s["stopped_early"] and s["step"] < 80
    assert s["best_step"] > 0
    assert s["best_val_loss"] < s["first_val_loss"] - 0.05, s["val_history"]
    vals = {h["step"]: h["val_loss"] for h in s["val_history"]}
    assert min(vals, key=vals.get) == s["best_step"]
    best = load_file(run / "adapters.safetensors")
    at_best = load_file(run / f"{s['best_step']:07d}_adapters.safetensors")
    last = load_file(run / f"{s['step']:07d}_adapters.safetensors")
    assert all(torch.equal(best[k], at_best[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    meta_step = json.loads((run / "summary.json").read_text())["best_step"]
    assert meta_step == s["best_step"]


def test_loss_curve_png_shows_train_and_validation(sentiment_run):
    import matplotlib.image as mpimg

    img = mpimg.imread(sentiment_run.run_dir / "loss_curve.png")[..., :3]
    def has(rgb):  # noqa: E306
        return int((np.abs(img - np.array(rgb) / 255).sum(-1) < 0.08).sum())
    assert has((31, 119, 180)) > 200, "train curve (tab:blue) missing"
    assert has((255, 127, 14)) > 100, "validation curve (tab:orange) missing"


def test_fine_tuned_model_stops_on_the_sentiment_task(sentiment_run, run_data, smollm2_path):
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter
    from tickerpulse.models.loading import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32),
                          sentiment_run.run_dir, merge=True).eval()
    rows = [json.loads(ln) for ln in (run_data / "test.jsonl").read_text().splitlines()[:6]]
    stopped, parsed, answers = 0, 0, []
    for row in rows:
        prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=80, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        new = out[0, prompt["input_ids"].shape[1]:].tolist()
        stopped += new[-1] == tok.eos_token_id and len(new) < 80
        text = tok.decode(new, skip_special_tokens=True)
        answers.append((text, parse_answer(text)))
        parsed += answers[-1][1][0] is not None
    assert stopped == len(rows), "every answer must end with <|im_end|> before the token limit"
    # the format is learnt: every answer is one JSON object with the five keys in order. Label/score consistency
    # (a schema rule) is not yet reliable after a few dozen steps (2 of 6 contradict on a bf16 base), so at least
    # half must pass the whole schema.
    for text, _ in answers:
        assert list(json.loads(text)) == ["target", "ticker", "sentiment", "score", "reasoning"], answers
    assert parsed >= len(rows) // 2, answers
