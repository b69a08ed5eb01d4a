"""The shared browser helper really renders a page (a local HTML file with an inline PNG)."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.browser import images_rendered, open_page, screenshot

# 1x1 red PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def test_screenshot_local_file(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(
        "<html><body><h1>hello</h1><script>setTimeout(()=>{document.body.insertAdjacentHTML('beforeend',"
        "'<p>late text</p>')},300)</script>"
        f"<img src='data:image/png;base64,{base64.b64encode(PNG).decode()}'></body></html>"
    )
    text = screenshot(page, tmp_path / "shot.png", wait_text="late text")
    assert "hello" in text and "late text" in text
    with open_page(page) as driver:
        assert images_rendered(driver) == [[1, 1]]
