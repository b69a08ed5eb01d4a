"""The answer side of the task contract: what any input becomes before it is asked about, and how a label
and a score become an answer that always validates as `SentimentAnswer` (serve, stream, evaluate and
calibration all build answers here, so a fast-mode answer is the same wherever it is made)."""

from __future__ import annotations

import math
import re
from typing import Any

from tickerpulse.task.contract import LABELS, MAX_REASONING_CHARS, NEUTRAL_BAND, SentimentAnswer, resolve_target

_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """Lone surrogates (valid in JSON escapes, not in UTF-8; json.loads joins real pairs) become U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


# sanitize_text keeps 2000 characters but walks the whole text in Python: a 1 MB post held the GIL (and
# stalled /health) for ~0.1 s. Cut earlier, with room for the tags and control characters it removes.
MAX_TEXT_CHARS = 16_000


def clean_text(text: Any) -> str:
    """Any input as a str the tokenizer accepts: lone surrogates and undecodable bytes become U+FFFD, and at
    most MAX_TEXT_CHARS characters (the prompt keeps 2000 after `sanitize_text`)."""
    if isinstance(text, bytes):
        text = text[: 4 * MAX_TEXT_CHARS].decode("utf-8", "replace")
    text = "" if text is None else str(text)
    return replace_surrogates(text[:MAX_TEXT_CHARS])


def normalize_ticker(ticker: str | None) -> str | None:
    """The ticker as the answer schema stores it (upper case, no `$`), or None. Raises ValueError if invalid."""
    if ticker is None or not str(ticker).strip():
        return None
    return SentimentAnswer.model_validate({"ticker": ticker, "sentiment": "neutral", "score": 0}).ticker


def normalize_target(target: str | None) -> str | None:
    """The target as answers echo it (`$msft` -> MSFT, names as written, tidied), or None. Raises ValueError
    for a target the schema refuses (too long)."""
    return resolve_target(target)[0]


def make_answer(target: str | None, label: str, score: float, reasoning: str = "") -> dict[str, Any]:
    """A dict that validates as SentimentAnswer: target echoed with its symbol when known, the score clamped
    into the label's range, reasoning bounded."""
    if label not in LABELS:
        label = "neutral"
    s = 0.0 if not math.isfinite(score) else max(-1.0, min(1.0, float(score)))
    s = round(s, 2)
    if label == "positive":
        s = max(s, 0.01)
    elif label == "negative":
        s = min(s, -0.01)
    else:
        s = max(-NEUTRAL_BAND, min(NEUTRAL_BAND, s))
    shown, ticker = resolve_target(target)
    ans = SentimentAnswer(target=shown, ticker=ticker, sentiment=label, score=s,
                          reasoning=(reasoning or "")[:MAX_REASONING_CHARS])
    return ans.model_dump()
