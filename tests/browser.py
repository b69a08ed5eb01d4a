"""A real headless Chromium for tests (Debian chromium + chromedriver, driven by selenium).

`screenshot(url, png, wait_text=...)` loads a page (http:// or a local file), waits until `wait_text`
appears (live pages render after their first fetch), saves a PNG and returns the page's visible text.
`open_page(url)` yields the driver for tests that need to inspect the DOM (image sizes, element counts).
Tests skip with a reason when no browser is installed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

# The closed network here refuses Chromium's background connections; these flags keep it quiet and fast.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--window-size=1400,1000", "--hide-scrollbars",
]


def _require_browser() -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium/chromedriver installed (scripts/bootstrap.sh installs them with apt)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium not installed (dev extra)")


def _as_url(target: str | Path) -> str:
    s = str(target)
    if s.startswith(("http://", "https://", "file://")):
        return s
    return Path(s).resolve().as_uri()


@contextlib.contextmanager
def open_page(url: str | Path, wait_text: str | None = None, timeout: float = 30.0) -> Iterator["object"]:
    """A selenium driver with `url` loaded (and `wait_text` visible); quits the browser afterwards."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tp-chrome-")
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(timeout)
        driver.get(_as_url(url))
        if wait_text:
            deadline = time.monotonic() + timeout
            while wait_text not in driver.find_element("tag name", "body").text:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{wait_text!r} did not appear on {url} within {timeout}s")
                time.sleep(0.2)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(url: str | Path, png: str | Path, wait_text: str | None = None, timeout: float = 30.0) -> str:
    """Save a full-window PNG of the page and return its visible text."""
    with open_page(url, wait_text=wait_text, timeout=timeout) as driver:
        driver.save_screenshot(str(png))
        text = driver.find_element("tag name", "body").text
    assert Path(png).stat().st_size > 1000, "screenshot is empty"
    return text


def images_rendered(driver: "object") -> list[tuple[int, int]]:
    """(naturalWidth, naturalHeight) of every <img>: a broken image reports 0x0."""
    return driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight]);"
    )
