"""`tickerpulse.serve.app.run` ends the process a few seconds after SIGTERM whatever the model is doing, even in
work that never checks for cancellation (a fault injected into a real server process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.conftest import free_port

STUCK_SERVER = r"""
import sys, time
from tickerpulse.serve.app import ServeConfig, run
from tickerpulse.serve.engine import SentimentEngine

engine = SentimentEngine("smollm2-135m", threads=1)

def stuck(*args, **kwargs):  # the fault: model work that never returns and never looks at a cancel flag
    time.sleep(3600)

engine.analyze = stuck
run(ServeConfig(port=int(sys.argv[1]), timeout=3600), engine=engine)
"""


def test_sigterm_stops_a_server_whose_model_thread_is_stuck(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SERVER, str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(_post(url)), daemon=True)
        client.start()
        while not httpx.get(url + "/health", timeout=5).json()["busy"]:
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        took = time.monotonic() - t0
        client.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read() if proc.stdout else ""
    assert took < 8, f"{took:.1f}s to stop\n{log}"
    assert proc.returncode in (0, -signal.SIGTERM), log  # uvicorn re-raises the signal once it has shut down
    assert "abandoning it" in log
    assert answers and answers[0] in (503, "closed")  # the waiting client was told, or its connection closed


def _post(url: str) -> int | str:
    try:
        return httpx.post(url + "/v1/sentiment", json={"text": "$AAPL beats"}, timeout=60).status_code
    except httpx.HTTPError:
        return "closed"
