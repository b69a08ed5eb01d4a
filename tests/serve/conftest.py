"""One real server for the serve tests: SmolLM2 + a small random LoRA adapter made here, uvicorn in a thread
on a free 127.0.0.1 port, with an API key, a small queue and a small body limit so the guards can be hit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

API_KEY = "test-key-123"


def make_lora_adapter(folder: Path, base: Path, seed: int = 0) -> Path:
    """A real PEFT LoRA adapter with random (non-zero) weights: it changes the logits, which is all we need."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="package")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    return make_lora_adapter(tmp_path_factory.mktemp("lora") / "tiny", smollm2_path)


@pytest.fixture(scope="package")
def engine(smollm2_path: Path, lora_dir: Path):
    """The engine every serve test shares. One torch thread: on a shared 2-core box OpenMP's spinning threads
    make each op 10x slower when other processes compete (restored afterwards)."""
    import torch

    from tickerpulse.serve.engine import SentimentEngine

    before = torch.get_num_threads()
    yield SentimentEngine("smollm2-135m", adapters={"tiny": lora_dir}, threads=1)
    torch.set_num_threads(before)


class Server:
    def __init__(self, url: str, app, server, thread) -> None:
        self.url, self.app, self.server, self.thread = url, app, server, thread

    def client(self, key: str | None = API_KEY, timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


@contextmanager
def serving(engine: Any, **config: Any) -> Iterator[Server]:
    """A uvicorn thread on a free 127.0.0.1 port serving `engine` with ServeConfig overrides `config`."""
    import uvicorn

    from tickerpulse.serve.app import ServeConfig, create_app

    port = free_port()
    cfg = ServeConfig(**{"model": "smollm2-135m", "default_model": "smollm2-135m", "port": port, **config})
    app = create_app(cfg, engine=engine)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=uv.run, name=f"tp-test-server-{port}", daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise RuntimeError("test server did not start")
    try:
        yield Server(url, app, uv, th)
    finally:
        uv.should_exit = True
        th.join(timeout=15)


@pytest.fixture(scope="package")
def server(engine, monkeypatch_session):
    """The protocol tests' server: the shared engine, an API key, a small queue."""
    monkeypatch_session.setenv("TICKERPULSE_API_KEY", API_KEY)
    with serving(engine, max_queue=8, max_body_bytes=1_000_000, timeout=600.0, max_batch_size=32) as srv:
        yield srv


@pytest.fixture(scope="package")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
