"""The sentiment task contract: prompt, answer schema, parsing. Every stage uses these, so the student is
trained on exactly the prompt the server and the stream send later.

A question asks about a *target*: a ticker symbol (`MSFT`, `$msft`), an entity name (`Johnson & Johnson`,
`Brent crude`) or None (the market / the text as a whole). `resolve_target` is the one rule that turns what a
caller sent into (target as shown to the model, its symbol when known): a symbol is its own ticker, a name
gets the symbol of the company table (`task.names.symbol_of_name`) or None.

The answer is one published schema, `{target, ticker, sentiment, score, reasoning}`, keys in this fixed
order: putting `sentiment` before the free text lets fast mode score the three label tokens right after
`"sentiment": "`, and the target right before it is what the label is about. Prompt `sentiment-v3` (the
default) shows the target, marks its mentions in the post (`task.marking`) and has the model write the whole
answer; `sentiment-v2` is the same without the marks; `sentiment-v1` (models trained before
targets) shows only a symbol and its models write `{ticker, sentiment, score, reasoning}`: the server adds
`target` to their answers.
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

from tickerpulse.task.marking import mark_target, unmark

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
LABEL_AFTER = '"sentiment": "'  # the answer text right before the label token fast mode reads
Label = Literal["negative", "neutral", "positive"]
DEFAULT_PROMPT = "sentiment-v3"
MAX_REASONING_CHARS = 400
MAX_TARGET_CHARS = 80
NEUTRAL_BAND = 0.5  # a neutral answer's |score| must stay within this
TICKER_RE = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:[.\-][A-Z0-9]{1,4})?$")


# Chat-template control tokens a tokenizer would read as real special tokens inside the prompt (ChatML's
# <|im_start|>, Llama's <|eot_id|>, Gemma's <start_of_turn>, <s>, [INST]): in a post they could open a fake
# assistant turn, so they are broken up (`<|im_start|>` -> `< |im_start| >`) and read as plain text.
_CONTROL_TOKEN_RE = re.compile(r"<\|[^<>|\n]{0,40}\|>|</?\s*(?:start_of_turn|end_of_turn|bos|eos|pad|unk|s)\s*>|\[/?INST\]",
                               re.I)


def _break_control_token(m: re.Match[str]) -> str:
    tok = m.group(0)
    return "< " + tok[1:-1] + " >" if tok.startswith("<") else "[ " + tok[1:-1] + " ]"


_POST_TAG_RE = re.compile(r"</?\s*post\s*>", re.I)


def strip_post_tags(text: str) -> str:
    """`text` with no `<post>`/`</post>` tag left, also none that removing one would join ("</<post>post>"):
    tags become spaces for a few passes, then the `<` of any tag still there becomes `‹` (bounded time)."""
    for _ in range(4):
        text, n = _POST_TAG_RE.subn(" ", text)
        if not n:
            return text
    return _POST_TAG_RE.sub(lambda m: "\u2039" + m.group(0)[1:], text)


def clean_target(value: str | None) -> str | None:
    """A target as the prompt and the answer show it: whitespace collapsed, no control characters or post
    tags, at most MAX_TARGET_CHARS; None for nothing. Raises ValueError for a target that is too long."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"target must be a string, got {type(value).__name__}")
    if len(value) > 16 * MAX_TARGET_CHARS:  # no cleaning brings that back to a target's length: refuse it unread
        raise ValueError(f"target has {len(value.strip())} characters (at most {MAX_TARGET_CHARS})")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())
    text = " ".join(_CONTROL_TOKEN_RE.sub(_break_control_token, strip_post_tags(text)).split())
    if len(text) > MAX_TARGET_CHARS:
        raise ValueError(f"target has {len(text)} characters (at most {MAX_TARGET_CHARS})")
    return text or None


def resolve_target(value: str | None) -> tuple[str | None, str | None]:
    """(target, ticker) for what a caller asks about: `$msft` / `MSFT` -> ("MSFT", "MSFT"); a name ->
    (the name, its symbol or None): `Microsoft` -> ("Microsoft", "MSFT"), `Brent crude` -> ("Brent crude",
    None); None or blank -> (None, None). A symbol is upper case as written or starts with `$` (so `Tesla` is
    a name, `BP` a symbol). Raises ValueError for a target that is too long or not a string.

    Memoised: one question's prompt, answer prefix and answer each resolve its target (four times per item
    in the engine), and a stream asks about the same few hundred symbols all day."""
    if value is not None and not isinstance(value, str):  # before the cache: an unhashable value is no target either
        raise ValueError(f"target must be a string, got {type(value).__name__}")
    return _resolve_target(value)


@lru_cache(maxsize=4096)
def _resolve_target(value: str | None) -> tuple[str | None, str | None]:
    from tickerpulse.task.names import symbol_of_name

    target = clean_target(value)
    if target is None:
        return None, None
    sym = target.lstrip("$").upper()
    if (target.startswith("$") or target == target.upper()) and TICKER_RE.match(sym):
        return sym, sym
    return target, symbol_of_name(target)


class SentimentAnswer(BaseModel):
    """One (text, target) judgement. `score` agrees in sign with `sentiment`."""

    model_config = ConfigDict(extra="forbid")

    target: str | None = Field(None, max_length=MAX_TARGET_CHARS,
                               description="What the answer is about: a symbol, an entity name, or null for the market.")
    ticker: str | None = Field(None, description="Upper-case symbol without '$', or null for the market.")
    sentiment: Label
    score: float = Field(..., ge=-1.0, le=1.0)
    reasoning: str = Field("", max_length=MAX_REASONING_CHARS)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return clean_target(v)

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
            "target": {"anyOf": [{"type": "string", "maxLength": MAX_TARGET_CHARS}, {"type": "null"}]},
            "ticker": {"anyOf": [{"type": "string", "pattern": TICKER_RE.pattern}, {"type": "null"}]},
            "sentiment": {"type": "string", "enum": list(LABELS)},
            "score": {"type": "number", "minimum": -1, "maximum": 1},
            "reasoning": {"type": "string", "maxLength": MAX_REASONING_CHARS},
        },
        "required": ["target", "ticker", "sentiment", "score", "reasoning"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=8)
def load_prompt(version: str = DEFAULT_PROMPT) -> dict[str, str]:
    """The versioned prompt template {version, system, user, hash, answer_target, mark_target}
    (`answer_target`: the model writes the target into its answer and the user message shows it: sentiment-v2
    on; `mark_target`: the target's mentions in the post are marked, `task.marking`: sentiment-v3)."""
    try:
        raw = resources.files("tickerpulse.task").joinpath("prompts", f"{version}.yaml").read_text("utf-8")
    except FileNotFoundError:
        raise ValueError(f"unknown prompt version {version!r}") from None
    spec = yaml.safe_load(raw)
    digest = hashlib.sha256((spec["system"] + "\x00" + spec["user"]).encode()).hexdigest()[:16]
    return {"version": spec["version"], "system": spec["system"], "user": spec["user"], "hash": digest,
            "answer_target": bool(spec.get("answer_target", False)), "mark_target": bool(spec.get("mark_target", False))}


def sanitize_text(text: str, max_chars: int = 2000) -> str:
    """Make an untrusted post safe to embed: no fake </post> tags or chat control tokens, no control chars,
    bounded length."""
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text.replace("\x00", ""))
    text = _CONTROL_TOKEN_RE.sub(_break_control_token, strip_post_tags(text))
    if len(text) > max_chars:
        text = text[:max_chars] + " ..."
    return text.strip()


def build_messages(text: str, target: str | None = None, version: str = DEFAULT_PROMPT) -> list[dict[str, str]]:
    """System + user messages for one (text, target); `target` as `resolve_target` takes it (a prompt
    without targets, sentiment-v1, shows the target's symbol or none)."""
    p = load_prompt(version)
    shown, ticker = resolve_target(target)
    slot = shown if p["answer_target"] else ticker
    user = p["user"].replace("{target}", slot or "none").replace("{ticker}", slot or "none")
    post = sanitize_text(text)
    if p["mark_target"]:
        post = mark_target(post, shown, ticker)
    user = user.replace("{text}", post)
    return [{"role": "system", "content": p["system"]}, {"role": "user", "content": user}]


_POST_BLOCK_RE = re.compile(r"<post>\s*(.*?)\s*</post>", re.S)


def post_of(user: str) -> str | None:
    """The post of a user message `build_messages` wrote (sanitised, without sentiment-v3's target marks), for
    whoever reads prompts back (evaluation of chat rows, split grouping, the test teacher); None without a
    `<post>` block."""
    m = _POST_BLOCK_RE.search(user)
    return unmark(m.group(1)) if m else None


def answer_dict(target: str | None, sentiment: str, score: float, reasoning: str = "",
                version: str = DEFAULT_PROMPT) -> dict[str, Any]:
    """The answer object in key order, validated; without `target` for a prompt whose model does not write it."""
    shown, ticker = resolve_target(target)
    ans = SentimentAnswer(target=shown, ticker=ticker, sentiment=sentiment, score=round(float(score), 2),
                          reasoning=reasoning)
    d = ans.model_dump()
    if not load_prompt(version)["answer_target"]:
        d.pop("target")
    return d


def format_answer(target: str | None, sentiment: str, score: float, reasoning: str = "",
                  version: str = DEFAULT_PROMPT) -> str:
    """Canonical assistant JSON (validated), keys in the fixed order."""
    return json.dumps(answer_dict(target, sentiment, score, reasoning, version), ensure_ascii=False)


def answer_prefix(target: str | None, version: str = DEFAULT_PROMPT) -> str:
    """The assistant text up to the label, for label-token scoring (fast mode) and constrained decoding."""
    shown, ticker = resolve_target(target)
    head = '{"target": ' + json.dumps(shown, ensure_ascii=False) + ", " if load_prompt(version)["answer_target"] else "{"
    return head + '"ticker": ' + json.dumps(ticker) + ", " + LABEL_AFTER


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
