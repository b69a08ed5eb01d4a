"""Start more real servers over the shared test engine, each with its own limits (the package `server`
fixture keeps the defaults the protocol tests need)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.conftest import free_port
from tests.serve.conftest import Server


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
