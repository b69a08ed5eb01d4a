"""`data stats` counts tokens as the model sees them (its chat template applied), with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.task.contract import build_messages, format_answer
from tickerpulse.data.stats import folder_stats, token_lengths


def chat_row(text: str) -> dict:
    return {"messages": build_messages(text, "AAPL") + [{"role": "assistant", "content": format_answer("AAPL", "neutral", 0.0)}]}


@pytest.fixture(scope="module")
def tok(smollm2_path: Path):
    from tickerpulse.models.loading import load_tokenizer

    return load_tokenizer(smollm2_path)


@pytest.mark.parametrize("fmt,row,expect", [
    ("chat", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"),
    ("completions", {"prompt": "hi", "completion": "yo"},
     "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"),
    ("text", {"text": "hello world"}, "hello world<|im_end|>"),
])
def test_token_lengths_use_the_chat_template(tok, fmt, row, expect):
    [n] = token_lengths(tok, [row], fmt)
    if fmt != "text":  # SmolLM2's template adds its default system prompt when none is given
        msgs = row.get("messages") or [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        template = tok.apply_chat_template(msgs, tokenize=False)
        assert template.endswith(expect) and template.startswith("<|im_start|>system")
        expect = template
    assert n == len(tok(expect, add_special_tokens=False)["input_ids"])


def test_folder_stats_and_cli(tmp_path, smollm2_path):
    rows = [chat_row("short"), chat_row("a much longer post " * 40), chat_row("medium length post " * 5)]
    for split in ("train", "valid"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = folder_stats(tmp_path, str(smollm2_path), max_seq_length=300)
    assert [s.split for s in stats] == ["train", "valid"]
    train = stats[0]
    assert train.rows == 3 and train.format == "chat"
    assert train.p50 < train.max and train.max > 300 and train.over_max == 1
    assert train.p50 <= train.p90 <= train.p99 <= train.max
    res = CliRunner().invoke(app, ["data", "stats", str(tmp_path), "--model", str(smollm2_path), "--max-seq-length", "300"],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "p50" in res.output and "p99" in res.output and ">300" in res.output
    assert "truncated in training" in res.output
