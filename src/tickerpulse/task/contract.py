"""The sentiment task contract: prompt, answer schema, parsing. Every stage uses these, so the student is
trained on exactly the prompt the server and the stream send later.

Answer JSON keys are in a fixed order `{ticker, sentiment, score, reasoning}`: putting `sentiment` before
the free text lets the fast mode score the three label tokens right after `"sentiment": "`.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
Label = Literal["negative", "neutral", "positive"]
DEFAULT_PROMPT = "sentiment-v1"
MAX_REASONING_CHARS = 400
NEUTRAL_BAND = 0.5  # a neutral answer's |score| must stay within this
TICKER_RE = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:[.\-][A-Z0-9]{1,4})?$")


class SentimentAnswer(BaseModel):
    """One (text, ticker) judgement. `score` agrees in sign with `sentiment`."""

    model_config = ConfigDict(extra="forbid")

    ticker: str | None = Field(None, description="Upper-case symbol without '$', or null for the market.")
    sentiment: Label
    score: float = Field(..., ge=-1.0, le=1.0)
    reasoning: str = Field("", max_length=MAX_REASONING_CHARS)

    @field_validator("ticker")
    @classmethod
    def _ticker(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        v = v.strip().lstrip("$").upper()
        if not TICKER_RE.match(v):
            raise ValueError(f"not a ticker symbol: {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SentimentAnswer":
        s = self.score
        if self.sentiment == "positive" and s <= 0:
            raise ValueError(f"score {s} contradicts sentiment positive (must be > 0)")
        if self.sentiment == "negative" and s >= 0:
            raise ValueError(f"score {s} contradicts sentiment negative (must be < 0)")
        if self.sentiment == "neutral" and abs(s) > NEUTRAL_BAND:
            raise ValueError(f"score {s} contradicts sentiment neutral (|score| must be <= {NEUTRAL_BAND})")
        return self


def answer_json_schema() -> dict[str, Any]:
    """The published JSON schema of one answer (served at /v1/sentiment/schema, used for constrained decoding)."""
    return {
        "type": "object",
        "properties": {
            "ticker": {"anyOf": [{"type": "string", "pattern": TICKER_RE.pattern}, {"type": "null"}]},
            "sentiment": {"type": "string", "enum": list(LABELS)},
            "score": {"type": "number", "minimum": -1, "maximum": 1},
            "reasoning": {"type": "string", "maxLength": MAX_REASONING_CHARS},
        },
        "required": ["ticker", "sentiment", "score", "reasoning"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=8)
def load_prompt(version: str = DEFAULT_PROMPT) -> dict[str, str]:
    """The versioned prompt template {version, system, user, hash}."""
    try:
        raw = resources.files("tickerpulse.task").joinpath("prompts", f"{version}.yaml").read_text("utf-8")
    except FileNotFoundError:
        raise ValueError(f"unknown prompt version {version!r}") from None
    spec = yaml.safe_load(raw)
    digest = hashlib.sha256((spec["system"] + "\x00" + spec["user"]).encode()).hexdigest()[:16]
    return {"version": spec["version"], "system": spec["system"], "user": spec["user"], "hash": digest}


def sanitize_text(text: str, max_chars: int = 2000) -> str:
    """Make an untrusted post safe to embed: no fake </post> tags, no control chars, bounded length."""
    text = text.replace("\x00", "")
    text = re.sub(r"</?\s*post\s*>", " ", text, flags=re.I)
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)
    if len(text) > max_chars:
        text = text[:max_chars] + " ..."
    return text.strip()


def build_messages(text: str, ticker: str | None = None, version: str = DEFAULT_PROMPT) -> list[dict[str, str]]:
    """System + user messages for one (text, ticker)."""
    p = load_prompt(version)
    user = p["user"].replace("{ticker}", ticker or "none").replace("{text}", sanitize_text(text))
    return [{"role": "system", "content": p["system"]}, {"role": "user", "content": user}]


def format_answer(ticker: str | None, sentiment: str, score: float, reasoning: str = "") -> str:
    """Canonical assistant JSON (validated), keys in the fixed order."""
    ans = SentimentAnswer(ticker=ticker, sentiment=sentiment, score=round(float(score), 2), reasoning=reasoning)
    return json.dumps(
        {"ticker": ans.ticker, "sentiment": ans.sentiment, "score": ans.score, "reasoning": ans.reasoning},
        ensure_ascii=False,
    )


def answer_prefix(ticker: str | None) -> str:
    """The assistant text up to the label, for label-token scoring (fast mode)."""
    return '{"ticker": ' + json.dumps(ticker) + ', "sentiment": "'


_OBJ_RE = re.compile(r"\{.*\}", re.S)


def parse_answer(text: str) -> tuple[SentimentAnswer | None, str | None]:
    """Parse a model's answer. Returns (answer, None) or (None, reason). Never raises.

    Tolerates prose around one JSON object (counted as JSON-valid only via `extract_json`).
    """
    obj, err = extract_json(text)
    if obj is None:
        return None, err
    try:
        return SentimentAnswer.model_validate(obj), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        return None, f"schema: {where}: {first['msg']}"


def extract_json(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in `text` (whole text first, then the outermost {...})."""
    text = (text or "").strip()
    if not text:
        return None, "empty answer"
    for candidate in (text, *(m.group(0) for m in [_OBJ_RE.search(text)] if m)):
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj, None
        return None, f"JSON is a {type(obj).__name__}, not an object"
    return None, "not JSON"


# Scores the gold teacher gives a label when the data has no continuous score.
LABEL_SCORES = {"negative": -0.7, "neutral": 0.0, "positive": 0.7}


def score_to_label(score: float, band: float = 0.1) -> Label:
    """FiQA's convention: > band positive, < -band negative, else neutral."""
    return "positive" if score > band else "negative" if score < -band else "neutral"
