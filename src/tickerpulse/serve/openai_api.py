"""The wire format: request and response models of the OpenAI protocol subset we serve and of `/v1/sentiment`,
the 400 error (`BadRequest`, `error_body`) and server-sent events (`sse`).

Requests forbid unknown fields and reject options we do not implement (tools, logprobs, penalties, ...)
with a 400 that names them, instead of silently ignoring them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickerpulse.task.answers import replace_surrogates

MAX_N = 8
MAX_ITEMS = 256
# (text, ticker) pairs one /v1/sentiment request may expand to (texts x extracted tickers): work, not texts.
MAX_EXPANDED_ITEMS = 1024
MAX_TICKERS_PER_TEXT = 8  # a text without a given ticker is asked about at most this many it names
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_TOKENS = 131_072  # a sanity bound; the model's context gives the real limit (400 naming it)
MAX_SEED = 2**63 - 1
# Below this a positive temperature divides fp32 logits into float64 overflow (1e-320 is subnormal): 400, not NaN.
MIN_TEMPERATURE = 1e-6


class BadRequest(ValueError):
    """A request the server understands but refuses (400)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonSchemaSpec(Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format json_schema needs json_schema.schema")
        return self


class StreamOptions(Strict):
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; lone surrogates become U+FFFD (the tokenizer refuses them)."""
        if self.content is None or isinstance(self.content, str):
            return _utf8(self.content or "")
        parts = []
        for p in self.content:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise ValueError(f"message content part of type {str(p.get('type'))[:40]!r} is not supported (text only)")
            parts.append(p["text"])
        return _utf8("".join(parts))


class _Sampling(Strict):
    """Sampling parameters, checked here so a bad value is a 400 for its request, never an error in a batch."""

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED - MAX_N)  # choice j samples with seed + j
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # accepted only at their no-op values, so a client that sets them learns we do not implement them
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if 0.0 < v < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        for s in [v] if isinstance(v, str) else v or []:
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"stop sequences may have at most {MAX_STOP_CHARS} characters")
        return _utf8(v)

    @model_validator(mode="after")
    def _unsupported(self) -> "_Sampling":
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise ValueError(f"{name} is not supported by this server")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by this server")
        if self.logprobs not in (None, False, 0) or self.top_logprobs:
            raise ValueError("logprobs are not supported by this server")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None

    @model_validator(mode="after")
    def _no_tools(self) -> "ChatCompletionRequest":
        if self.tools or self.functions or self.tool_choice not in (None, "none"):
            raise ValueError("tools / function calling are not supported by this server")
        return self

    def limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _unsupported_completion(self) -> "CompletionRequest":
        if self.echo:
            raise ValueError("echo is not supported by this server")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by this server")
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported by this server")
        if isinstance(self.prompt, list) and not (1 <= len(self.prompt) <= MAX_N):
            raise ValueError(f"prompt lists must hold 1 to {MAX_N} strings")
        if isinstance(self.prompt, list) and len(self.prompt) * self.n > MAX_N:
            raise ValueError(f"prompts x n may be at most {MAX_N} outputs per request")
        return self

    def prompts(self) -> list[str]:
        """The prompts; lone surrogates become U+FFFD (the tokenizer refuses them)."""
        return [_utf8(p) for p in ([self.prompt] if isinstance(self.prompt, str) else self.prompt)]




def _utf8(v: Any) -> Any:
    """`replace_surrogates` on a str or a list of str (anything else is left for validation to judge)."""
    if isinstance(v, str):
        return replace_surrogates(v)
    if isinstance(v, list):
        return [_utf8(x) for x in v]
    return v


class SentimentItem(Strict):
    """A text and what to judge in it: `target` (a symbol such as `$msft` / `MSFT`, or an entity name such as
    `Microsoft`, `Brent crude`; null: the market) or `ticker` (a symbol; the older field). Neither: every
    ticker the text names (`task.questions`)."""

    text: str = Field(..., max_length=1_000_000)
    target: str | None = None
    ticker: str | None = None

    _clean = field_validator("text", "target", mode="before")(classmethod(lambda cls, v: _utf8(v)))

    @model_validator(mode="after")
    def _one_target(self) -> "SentimentItem":
        if {"target", "ticker"} <= self.model_fields_set:
            raise ValueError("give target or ticker, not both")
        return self


class SentimentRequest(Strict):
    """One of `items`, `texts` or `text`. A top-level `target` (or `ticker`) applies to `texts`/`text`."""

    items: list[SentimentItem] | None = Field(None, max_length=MAX_ITEMS)
    texts: list[str] | None = Field(None, max_length=MAX_ITEMS)
    text: str | None = None
    target: str | None = None
    ticker: str | None = None
    mode: Literal["fast", "reasoning"] = "fast"
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=400)

    _clean = field_validator("texts", "text", "target", mode="before")(classmethod(lambda cls, v: _utf8(v)))

    @model_validator(mode="after")
    def _one_input(self) -> "SentimentRequest":
        given = [k for k in ("items", "texts", "text") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of items, texts or text")
        if self.items is not None and self.model_fields_set & {"target", "ticker"}:
            raise ValueError("with items, put the target inside each item")
        if {"target", "ticker"} <= self.model_fields_set:
            raise ValueError("give target or ticker, not both")
        return self

    def pairs(self) -> list[tuple[str, str | None, Literal["target", "ticker"] | None]]:
        """(text, what is asked, which field asked it: None when neither was given) per input text."""
        if self.items is not None:
            return [(it.text, *_asked(it)) for it in self.items]
        texts = [self.text] if self.text is not None else list(self.texts or [])
        return [(t, *_asked(self)) for t in texts]


def _asked(obj: SentimentItem | SentimentRequest) -> tuple[str | None, Literal["target", "ticker"] | None]:
    """(value, field) of an item or request: `target` if set, else `ticker`, else (None, None)."""
    if "target" in obj.model_fields_set:
        return obj.target, "target"
    if "ticker" in obj.model_fields_set:
        return obj.ticker, "ticker"
    return None, None


# ------------------------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_response(rid: str, model: str, outs: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": fr,
                     "logprobs": None} for i, (text, fr) in enumerate(outs)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, index: int, delta: dict[str, Any], finish: str | None,
               created: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def completion_response(rid: str, model: str, outs: list[tuple[str, str]], prompt_tokens: int,
                        completion_tokens: int) -> dict[str, Any]:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "text": text, "finish_reason": fr, "logprobs": None} for i, (text, fr) in enumerate(outs)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(rid: str, model: str, index: int, text: str, finish: str | None, created: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}]}


def error_body(message: str, etype: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def sse(obj: Any) -> str:
    """One server-sent event carrying `obj` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
