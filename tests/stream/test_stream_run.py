"""`tickerpulse stream run --source replay` end to end: the supervisor starts producer, processor and
dashboard as child processes; the store fills; the dashboard shows it in a real headless Chromium
(screenshot); untrusted post text is shown as text, never as HTML; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import open_page
from tests.conftest import free_port

HOSTILE = '$AAPL <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> beats estimates'


def _wait_json(url: str, ok, timeout: float, proc: subprocess.Popen) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"stream run exited early with {proc.returncode}"
        try:
            last = httpx.get(url, timeout=5).json()
            if ok(last):
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting on {url}; last answer: {json.dumps(last)[:500]}")


@pytest.mark.browser
def test_stream_run_fills_the_store_and_the_dashboard_shows_it(shared_data: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "posts.jsonl"
    rows = [json.loads(line) for line in (shared_data / "twitter-financial-news-sentiment" / "valid-a.jsonl").open()][:300]
    rows.append({"id": "hostile-1", "text": HOSTILE})  # last: it is among the latest posts shown
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerpulse.cli.main", "stream", "run", "--source", "replay", "--file", str(corpus),
         "--speed", "0", "--scorer", "vader", "--dir", str(tmp_path / "stream"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        snap = _wait_json(f"{base}/api/snapshot?window=86400", lambda s: s["counts"]["posts"] == len(rows), 150, proc)
        assert snap["counts"]["docs"] > 50 and snap["top_mentions"] and snap["latest"]
        assert snap["health"]["status"] == "running" and snap["health"]["scorer"] == "vader"
        top = snap["top_mentions"][0]["ticker"]

        png = tmp_path / "dashboard.png"
        with open_page(base + "/", wait_text="posts processed", timeout=60) as driver:
            deadline = time.monotonic() + 30
            while f"{len(rows):,}" not in driver.find_element("tag name", "body").text:
                assert time.monotonic() < deadline, "the page never showed the post count"
                time.sleep(0.3)
            driver.save_screenshot(str(png))
            text = driver.find_element("tag name", "body").text
            posts_text = driver.find_element("id", "posts").text
            imgs = driver.execute_script("return document.querySelectorAll('#posts img, #posts script').length")
            pwned = driver.execute_script("return window.__pwned === undefined ? null : window.__pwned")
            charts = driver.execute_script("return document.querySelectorAll('#chart .uplot canvas, #volume .uplot canvas').length")
        assert png.stat().st_size > 20_000
        for label in ("posts processed", "Top tickers by mentions".upper(), "Pipeline health".upper(), top):
            assert label in text
        assert charts == 2  # the sentiment and mentions charts are drawn (uPlot canvases)
        # the hostile post is displayed as literal text and nothing in it ran
        api_latest = httpx.get(f"{base}/api/latest?limit=500&ticker=AAPL").json()
        assert any(d["post_id"] == "hostile-1" for d in api_latest)
        assert imgs == 0 and pwned is None
        assert "hostile-1" in json.dumps(snap["latest"]) and "<img src=x" in posts_text
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the whole process group
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"stream run did not stop on SIGINT:\n{out}")
    assert proc.returncode == 0, out
    assert f"dashboard: http://127.0.0.1:{port}/" in out
    assert "Traceback" not in out
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
