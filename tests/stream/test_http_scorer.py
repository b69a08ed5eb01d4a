"""The http scorer: against a server that is down (retries, then dead letters, the stream commits and goes
on) and against the real `tickerpulse serve` (slow: loads the model in a second process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import run_processor
from tickerpulse.stream.schema import Post
from tickerpulse.stream.store.duckdb import DuckDBStore

POSTS = ["$AAPL smashes earnings", "no ticker in this one", "$TSLA recall is terrible news"]


def _fill(cfg: StreamConfig) -> SqliteBus:
    bus = SqliteBus(cfg.bus_path)
    for i, text in enumerate(POSTS):
        bus.produce(cfg.topic, None, Post(id=f"h{i}", source="test", text=text, created_at=time.time()).to_bytes())
    bus.flush()
    return bus


def test_server_down_means_dead_letters_not_a_dead_stream(tmp_path: Path) -> None:
    cfg = StreamConfig(dir=tmp_path, scorer="http", url=f"http://127.0.0.1:{free_port()}", max_attempts=2,
                       backoff_s=0.01, poll_timeout=0.1)
    bus = _fill(cfg)
    totals = run_processor(cfg, until_idle=0.3, bus=bus)
    assert totals["posts"] == 3 and totals["docs"] == 0
    assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
    bus.close()
    store = DuckDBStore(cfg.db, read_only=True)
    dead = store.dead_letters()
    assert sorted(d.ticker for d in dead) == ["AAPL", "TSLA"]
    assert all(d.stage == "score" and d.attempts == 4 and "ConnectError" in d.reason for d in dead)
    assert store.counts()["posts"] == 3  # processed (and counted), just not judged


@pytest.mark.slow
def test_http_scorer_against_the_real_server(smollm2_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("tickerpulse.serve.app")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        cfg = StreamConfig(dir=tmp_path, scorer="http", url=f"http://127.0.0.1:{port}", poll_timeout=0.1)
        bus = _fill(cfg)
        totals = run_processor(cfg, until_idle=0.3, bus=bus)
        bus.close()
        assert totals["docs"] == 2 and totals["dead_letters"] == 0
        docs = DuckDBStore(cfg.db, read_only=True).latest(10)
        assert sorted(d.ticker for d in docs) == ["AAPL", "TSLA"]
        assert all(d.model_version.endswith(":sentiment-v1:fast") and d.model_version != "http:sentiment-v1:fast"
                   for d in docs)
    finally:
        server.terminate()
        server.wait(30)
