"""Distilled output is training data with no edits: the train stage's collate encodes every row with the
real SmolLM2 tokenizer (default suite), and `tickerpulse train` runs on it (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tickerpulse.data.formats import load_jsonl
from tickerpulse.distill.job import DistillConfig, run_distill


@pytest.fixture(scope="module")
def distilled(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distilled")
    run_distill(DistillConfig(input=str(shared_data / "twitter-financial-news-sentiment" / "valid-a.jsonl"),
                              teacher="gold", out=out, n_train=16, n_valid=4, n_test=4))
    return out


def test_train_collate_encodes_every_row(distilled, smollm2_path):
    from tickerpulse.models.loading import load_tokenizer
    from tickerpulse.train.collate import Encoder

    enc = Encoder(load_tokenizer(str(smollm2_path)), mask_prompt=True, max_seq_length=512)
    for split in ("train", "valid", "test"):
        rows, fmt = load_jsonl(distilled / f"{split}.jsonl")
        assert all("meta" in r for r in rows)  # provenance rides along
        encoded = enc.encode_split(rows, fmt)
        assert encoded.dropped == 0 and encoded.truncated == 0 and len(encoded.samples) == len(rows)
        tok = enc.tok
        for row, sample in zip(rows, encoded.samples):
            trained = tok.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != -100])
            answer = row["messages"][-1]["content"]
            assert answer in trained and "<post>" not in trained  # only the assistant JSON is learned
            json.loads(answer)


@pytest.mark.slow
def test_tickerpulse_train_runs_on_distilled_output(distilled, smollm2_path, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tickerpulse.cli.main", "train", "--model", "smollm2-135m", "--data", str(distilled),
         "--iters", "2", "--batch-size", "2", "--num-layers", "1", "--max-seq-length", "384",
         "--adapter-path", str(run), "--steps-per-eval", "2", "--val-batches", "1"],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (run / "adapters.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary  # the run folder describes itself
