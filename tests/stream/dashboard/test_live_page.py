"""The dashboard in a real headless Chromium while posts arrive: the page is opened BEFORE the stream has
written anything and must show the counts rising without a reload (pushed over SSE), draw both time charts,
show hover values, filter by a clicked ticker, zoom both charts together, and fall back to polling when
the live connection is refused. Screenshots are saved in the test's tmp_path (their paths are printed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.browser import open_page
from tests.conftest import ROOT, free_port
from tests.stream.dashboard.util import serving, write_in_another_process
from tickerpulse.stream.dashboard.app import create_app
from tickerpulse.stream.store.duckdb import DuckDBStore

WORDS = ["beats estimates and raises guidance", "misses estimates, shares slide", "to present at a conference",
         "upgraded to buy", "cut to sell after a profit warning", "files its annual report"]
TICKERS = ["AAPL", "TSLA", "NVDA", "MSFT"]
OUTPUT = ROOT / "test-output" / "dashboard"


def _count(driver) -> int:
    """The 'posts processed' KPI as shown on screen (0 before the first update)."""
    text = driver.execute_script(
        "const k = [...document.querySelectorAll('#kpis .kpi')].find(k => k.querySelector('.l').textContent === 'posts processed');"
        "return k ? k.querySelector('.v').textContent : '';")
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


def _shot(driver, png: Path) -> None:
    """Save a screenshot in the test's tmp_path and a copy in test-output/dashboard/ (git-ignored, kept
    after pytest rotates its temporary folders); print both paths."""
    driver.save_screenshot(str(png))
    assert png.stat().st_size > 20_000, "blank screenshot"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, OUTPUT / png.name)
    print(f"screenshot: {png} (copy: {OUTPUT / png.name})")


@pytest.mark.browser
def test_the_page_shows_the_count_rise_while_the_stream_runs(tmp_path: Path) -> None:
    n = 40
    corpus = tmp_path / "posts.jsonl"
    rows = [{"id": f"live-{i}", "text": f"${TICKERS[i % 4]} {WORDS[i % len(WORDS)]} (#{i})"} for i in range(n)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # one post every 0.4 s (about 16 s of stream) after the children start: the page is open long before the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickerpulse.cli.main", "stream", "run", "--source", "replay", "--file", str(corpus),
         "--gap", "0.4", "--speed", "1", "--scorer", "vader", "--dir", str(tmp_path / "stream"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[int] = []
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:  # the dashboard answers (the store may still be empty)
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the dashboard never came up"
            time.sleep(0.2)
        with open_page(base + "/", wait_text="posts processed", timeout=60) as driver:
            driver.execute_script("window.__sameDocument = 42")  # gone if the page reloads
            deadline = time.monotonic() + 120
            while not seen or seen[-1] < n:
                assert time.monotonic() < deadline, f"the count stopped rising on screen: {seen[-10:]}"
                c = _count(driver)
                if not seen or c != seen[-1]:
                    seen.append(c)
                    if len(seen) == 3:
                        _shot(driver, tmp_path / "dashboard-mid-stream.png")
                time.sleep(0.2)
            assert driver.execute_script("return window.__sameDocument") == 42, "the page reloaded"
            live = driver.find_element("id", "live").get_attribute("class")
            status = driver.find_element("id", "status").text
            assert "sse" in live and status.startswith("live"), (live, status)  # pushed, not polled

            # both time charts are drawn; hovering shows the values under the cursor in the legend
            assert driver.execute_script("return document.querySelectorAll('#chart .uplot canvas, #volume .uplot canvas').length") == 2
            from selenium.webdriver.common.action_chains import ActionChains

            over = driver.find_element("css selector", "#volume .u-over")
            ActionChains(driver).move_to_element(over).perform()
            time.sleep(0.3)
            values = [v.text for v in driver.find_elements("css selector", "#volume .u-legend .u-value")]
            assert any(v.endswith(("post", "posts")) for v in values), values

            _shot(driver, tmp_path / "dashboard.png")

            # click the first ticker of the mentions table: charts and posts show that ticker only
            ticker = driver.find_element("css selector", "#mentions tr.pick").get_attribute("data-ticker")
            driver.find_element("css selector", f'#mentions tr[data-ticker="{ticker}"]').click()
            deadline = time.monotonic() + 20
            while True:
                chip, metas, legend = driver.execute_script(  # one read: the page re-renders on every update
                    "const t = (q) => [...document.querySelectorAll(q)].map(e => e.textContent);"
                    "return [document.getElementById('filter').textContent, t('#posts .post .meta .tk'), t('#chart .u-legend .u-label')];")
                if f"${ticker}" in chip and metas and set(metas) == {f"${ticker}"} and legend[1:] == [ticker]:
                    break
                assert time.monotonic() < deadline, (chip, sorted(set(metas)), legend, ticker)  # a wrong ticker: the row moved under the mouse
                time.sleep(0.2)
            assert driver.execute_script("return location.hash") == f"#ticker={ticker}"
            assert f"{n // 4} mentions" in chip
            _shot(driver, tmp_path / "dashboard-filtered.png")
            driver.find_element("id", "filter-clear").click()
            deadline = time.monotonic() + 20
            while driver.execute_script("return document.querySelectorAll('#chart .u-legend .u-label').length") < 3:
                assert time.monotonic() < deadline, "clearing the filter did not bring the other tickers back"
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert seen[0] < n and len(seen) >= 3, f"the page did not watch the posts arrive: {seen}"
    assert seen == sorted(seen), seen
    assert proc.returncode == 0, out
    assert "Traceback" not in out


@pytest.mark.browser
def test_zoom_and_the_polling_fallback(tmp_path: Path) -> None:
    """No SSE slot at all (max_streams=0): the page polls and still sees new posts; a drag zooms both charts."""
    db = tmp_path / "store.duckdb"
    write_in_another_process(db, 60, start=0)
    app = create_app(lambda: DuckDBStore(db, read_only=True), refresh_ms=300, cache_s=0.1, max_streams=0)
    with serving(app) as base, open_page(base + "/", wait_text="posts processed", timeout=60) as driver:
        deadline = time.monotonic() + 30
        while "polling" not in driver.find_element("id", "status").text:
            assert time.monotonic() < deadline, driver.find_element("id", "status").text
            time.sleep(0.2)
        docs = lambda: driver.execute_script(  # noqa: E731
            "return [...document.querySelectorAll('#kpis .kpi')].find(k => k.querySelector('.l').textContent === 'sentiment docs')"
            ".querySelector('.v').textContent")
        assert docs() == "60"
        writer = threading.Thread(target=write_in_another_process, args=(db, 9, 60))
        writer.start()
        writer.join(120)
        deadline = time.monotonic() + 30
        while docs() != "69":
            assert time.monotonic() < deadline, docs()
            time.sleep(0.2)
        assert "poll" in driver.find_element("id", "live").get_attribute("class")

        from selenium.webdriver.common.action_chains import ActionChains

        span = "return (u => u.scales.x.max - u.scales.x.min)(document.querySelector('#ID .uplot').__plot)"
        over = driver.find_element("css selector", "#chart .u-over")
        w = over.size["width"]
        before = [driver.execute_script(span.replace("ID", i)) for i in ("chart", "volume")]
        ActionChains(driver).move_to_element_with_offset(over, -w // 4, 0).click_and_hold() \
            .move_by_offset(w // 4, 0).release().perform()
        time.sleep(1.0)  # a poll or two: a zoomed view keeps its range across updates
        after = [driver.execute_script(span.replace("ID", i)) for i in ("chart", "volume")]
        assert driver.find_element("id", "zoom-reset").is_displayed()
        assert after[0] < before[0] / 2 and after[1] == pytest.approx(after[0]), (before, after)
        _shot(driver, tmp_path / "dashboard-zoomed.png")
        driver.find_element("id", "zoom-reset").click()
        time.sleep(0.5)
        assert driver.execute_script(span.replace("ID", "chart")) == pytest.approx(before[0])
