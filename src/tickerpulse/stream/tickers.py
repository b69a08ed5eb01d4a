"""Ticker extraction from free text. (First version: cashtags only; the stream issue grows it.)"""

from __future__ import annotations

import re

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![\w])")


def extract_tickers(text: str) -> list[str]:
    """Upper-case symbols without `$`, in order of first appearance, no duplicates."""
    out: list[str] = []
    for m in _CASHTAG.finditer(text or ""):
        sym = m.group(1).upper()
        if sym not in out:
            out.append(sym)
    return out
