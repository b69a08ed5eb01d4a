"""Fixtures for training tests: sentiment chat data built from the shared twitter dataset, in a tmp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.task.contract import LABEL_SCORES, build_messages, format_answer


def sentiment_chat_rows(source: Path, start: int, n: int) -> list[dict]:
    """Rows `start..start+n` of a twitter-sentiment JSONL as chat rows with the canonical answer."""
    rows = []
    with open(source, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if len(rows) == n:
                break
            r = json.loads(line)
            ticker = (r.get("tickers") or [None])[0]
            answer = format_answer(ticker, r["label"], LABEL_SCORES[r["label"]])
            rows.append({"messages": build_messages(r["text"], ticker) + [{"role": "assistant", "content": answer}]})
    return rows


def write_split_folder(folder: Path, splits: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="session")
def short_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Short chat rows (tweet -> label word), so many steps stay cheap."""
    rows = []
    with open(shared_data / "twitter-financial-news-sentiment" / "train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if len(r["text"]) < 90:
                rows.append({"messages": [{"role": "user", "content": r["text"]},
                                          {"role": "assistant", "content": r["label"]}]})
            if len(rows) == 40:
                break
    return write_split_folder(tmp_path_factory.mktemp("short"), {"train": rows[:32], "valid": rows[32:]})


@pytest.fixture(scope="session")
def sentiment_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train (64) / valid (16) / test (16) chat rows from twitter-financial-news-sentiment."""
    return twitter_split_folder(shared_data, tmp_path_factory.mktemp("sentiment"), n_train=64)


def twitter_split_folder(shared_data: Path, folder: Path, n_train: int) -> Path:
    """train (`n_train`, from row 0) / valid (16, from row 5000) / test (16, from row 6000) of twitter train."""
    src = shared_data / "twitter-financial-news-sentiment" / "train.jsonl"
    return write_split_folder(folder, {
        "train": sentiment_chat_rows(src, 0, n_train),
        "valid": sentiment_chat_rows(src, 5000, 16),
        "test": sentiment_chat_rows(src, 6000, 16),
    })


@pytest.fixture(scope="session")
def tiny_model(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small randomly initialised Llama with SmolLM2's tokenizer, chat template and vocabulary.

    A real transformers model (same code paths as SmolLM2), ~60x cheaper: for loop mechanics (resume,
    checkpoints, fine-tune types) where the weights themselves do not matter.
    """
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    cfg = AutoConfig.from_pretrained(smollm2_path)
    cfg.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (smollm2_path / name).exists():
            shutil.copy(smollm2_path / name, folder / name)
    return folder


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot when the CPU is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
