"""Teachers: something that turns one (text, target) into a validated `SentimentAnswer`.

- `OpenAITeacher`: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server,
  our own `tickerpulse serve`) through the official `openai` client. It asks for a `response_format`
  json_schema, stepping down to json_object and then to no response_format for a request the endpoint
  answers with HTTP 400/422 (and keeps the mode that worked for later requests). Every answer is validated
  with the pydantic schema and the ticker check; an invalid answer is sent back with the validation error
  as feedback, up to `max_invalid` answers, then the item is *rejected* with the last reason. 429 (honouring
  Retry-After), 5xx, 408/409, timeouts and connection errors are retried with exponential backoff and
  jitter up to `max_retries`; after that the item *failed* (not cached: a rerun tries again).
  401/403/404 abort the job (`TeacherError`): no point sending the rest.
- `GoldTeacher`: the dataset's own labels mapped to scores, with a templated reasoning; offline and free.

The API key is read by the caller and handed to the client; it is never logged or written anywhere.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from tickerpulse.config import ConfigError
from tickerpulse.task.contract import (
    DEFAULT_PROMPT,
    LABEL_SCORES,
    SentimentAnswer,
    answer_json_schema,
    build_messages,
    parse_answer,
    resolve_target,
)

Status = Literal["ok", "rejected", "failed"]
FORMAT_LADDER = ("json_schema", "json_object", "none")
# USD per 1M tokens (input, output), from the providers' price pages; `--price-in/--price-out` override.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}
FEEDBACK = (
    "Your answer was rejected: {reason}. Reply again with one JSON object only, with exactly the keys "
    '"target", "ticker", "sentiment", "score", "reasoning"; the score must agree with the sentiment '
    "(positive > 0, negative < 0, neutral within [-0.5, 0.5])."
)


def endpoint_host(url: str) -> str:
    """host[:port] of a URL, without credentials or path (what provenance records)."""
    if not url.startswith(("http://", "https://")):
        return url
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class TeacherError(ConfigError):
    """The teacher cannot be used at all (wrong key, unknown model or URL): the job stops."""


@dataclass
class Item:
    """One thing to label: the text, the target the question is about (a symbol, an entity name, or None for
    the market), every symbol the text names and the gold judgement."""

    id: str
    text: str
    target: str | None
    tickers: list[str]
    gold_label: str | None = None
    gold_score: float | None = None
    source: str = "raw"  # the dataset reader that produced it (tfns, fpb, fiqa, csv, records, raw)


@dataclass
class Outcome:
    """What a teacher made of one item.

    `status` ok: `answer` is the canonical, validated answer dict; rejected: the teacher kept answering
    invalid JSON (cached, like an answer); failed: transport errors outlasted the retries (not cached).
    """

    status: Status
    answer: dict[str, Any] | None = None
    reason: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response_format: str | None = None
    reasoning_source: Literal["teacher", "template"] = "teacher"
    retries: Counter[str] = field(default_factory=Counter)
    labelled_at: float = field(default_factory=time.time)


class Teacher(Protocol):
    """The interface the job needs; `endpoint` and `model` are part of the cache key."""

    endpoint: str
    model: str
    cacheable: bool

    async def label(self, item: Item) -> Outcome: ...

    async def aclose(self) -> None: ...


def check_answer(content: str | None, target: str | None, tickers: list[str]) -> tuple[SentimentAnswer | None, str | None]:
    """Validate a teacher's raw answer: the pydantic schema, then the target consistency check.

    The answer's ticker must be the symbol of the target the question is about (`resolve_target`: the
    symbol itself, a name's symbol when the table knows it), or null when it has none; a given `target` key
    must be the asked target (the answer is about it, whatever it writes there, so an absent one is filled).
    """
    ans, reason = parse_answer(content or "")
    if ans is None:
        return None, reason
    shown, symbol = resolve_target(target)
    if ans.target is not None and ans.target != shown:
        return None, f"target: the question is about {shown}, the answer names {ans.target}"
    if symbol is not None and ans.ticker != symbol:
        return None, f"ticker: the question is about {symbol}, the answer names {ans.ticker}"
    if symbol is None and ans.ticker is not None:
        if ans.ticker in tickers:
            return None, f"ticker: the question names no ticker, the answer names {ans.ticker}"
        return None, f"ticker: {ans.ticker} is not mentioned in the post (expected null)"
    return ans.model_copy(update={"target": shown}), None


def canonical(ans: SentimentAnswer) -> dict[str, Any]:
    """The answer as stored and trained on: score rounded to 2 decimals without flipping its label."""
    score = round(ans.score, 2)
    if score == 0 and ans.sentiment != "neutral":  # 0.004 "positive" must stay positive after rounding
        score = 0.01 if ans.sentiment == "positive" else -0.01
    return {"target": ans.target, "ticker": ans.ticker, "sentiment": ans.sentiment, "score": score,
            "reasoning": ans.reasoning}


def schema_for(target: str | None) -> dict[str, Any]:
    """The answer schema narrowed to one question: `target` is that target and `ticker` its symbol (or null).

    Drops the keywords strict structured-output implementations often refuse (`pattern`, `maxLength`);
    the pydantic check enforces them after the fact.
    """
    shown, symbol = resolve_target(target)
    schema = copy.deepcopy(answer_json_schema())
    props = schema["properties"]
    props["target"] = {"type": "string", "enum": [shown]} if shown else {"type": "null"}
    props["ticker"] = {"type": "string", "enum": [symbol]} if symbol else {"type": "null"}
    props["reasoning"].pop("maxLength", None)
    return schema


def known_prices(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a known model name (dated snapshots match their family)."""
    for name in sorted(KNOWN_PRICES, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return KNOWN_PRICES[name]
    return None


class TokenBucket:
    """`rpm` requests per minute, bursts of at most one second's worth (at least 1)."""

    def __init__(self, rpm: float | None):
        self.rate = (rpm or 0) / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:  # FIFO: waiters queue on the lock
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class _GiveUp(Exception):
    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAITeacher:
    """A chat-completions endpoint as a teacher. See the module docstring for the retry policy."""

    cacheable = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        prompt_version: str = DEFAULT_PROMPT,
        response_format: Literal["auto", "json_schema", "json_object", "none"] = "auto",
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        max_invalid: int = 3,
        rpm: float | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        stop: asyncio.Event | None = None,
    ):
        self.endpoint = base_url.rstrip("/")
        self.model = model
        self._api_key, self.timeout = api_key, timeout
        self._client: Any = None  # created on the first cache miss: a fully cached rerun never imports openai
        self.prompt_version = prompt_version
        self.fixed_format = response_format != "auto"
        self.mode = FORMAT_LADDER.index("json_schema" if response_format == "auto" else response_format)
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.max_retries, self.max_invalid = max_retries, max_invalid
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.bucket = TokenBucket(rpm)
        self.stop = stop
        self.format_fallbacks: list[str] = []  # "json_schema -> json_object"
        self._schemas: dict[str | None, dict[str, Any]] = {}

    @property
    def client(self) -> Any:
        """The official `openai.AsyncOpenAI` client; its own retries are off (this class retries)."""
        if self._client is None:
            import openai

            self._openai = openai
            self._client = openai.AsyncOpenAI(base_url=self.endpoint, api_key=self._api_key, timeout=self.timeout,
                                              max_retries=0)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _schema(self, target: str | None) -> dict[str, Any]:
        if target not in self._schemas:
            self._schemas[target] = schema_for(target)
        return self._schemas[target]

    async def label(self, item: Item) -> Outcome:
        out = Outcome(status="failed")
        convo = build_messages(item.text, item.target, self.prompt_version)
        invalid = 0
        try:
            while True:
                resp = await self._complete(convo, item.target, out)
                usage = getattr(resp, "usage", None)
                out.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
                out.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
                content, reason = _content(resp)
                ans = None
                if reason is None:
                    ans, reason = check_answer(content, item.target, item.tickers)
                if ans is not None:
                    out.status, out.answer, out.reason = "ok", canonical(ans), None
                    out.labelled_at = time.time()
                    return out
                invalid += 1
                out.retries["invalid_answer"] += 1
                if invalid >= self.max_invalid:
                    raise _GiveUp("rejected", f"{reason} (after {invalid} answers)")
                convo = [*convo, {"role": "assistant", "content": content or ""},
                         {"role": "user", "content": FEEDBACK.format(reason=reason)}]
        except _GiveUp as exc:
            out.status, out.reason = exc.status, exc.reason
            out.labelled_at = time.time()
            return out

    async def _complete(self, messages: list[dict[str, str]], target: str | None, out: Outcome) -> Any:
        """One successful response, stepping down the response_format ladder on 400/422."""
        mode = self.mode
        while True:
            try:
                resp = await self._send(messages, FORMAT_LADDER[mode], target, out)
            except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as exc:
                if not self.fixed_format and mode + 1 < len(FORMAT_LADDER):
                    mode += 1
                    continue
                raise _GiveUp("rejected", f"bad request (HTTP {exc.status_code}): {_message(exc)}") from None
            if mode > self.mode:  # a lower mode worked where a higher one got 400: keep it for everyone
                self.format_fallbacks.append(f"{FORMAT_LADDER[self.mode]} -> {FORMAT_LADDER[mode]}")
                self.mode = mode
            out.response_format = FORMAT_LADDER[mode]
            return resp

    async def _send(self, messages: list[dict[str, str]], fmt: str, target: str | None, out: Outcome) -> Any:
        """POST once per attempt; retry transient errors with backoff. Raises 400s and `_GiveUp`."""
        client = self.client
        oa = self._openai
        kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        # response_format goes through extra_body: the same JSON on the wire, but the client's typed-dict
        # transform (which walks the whole schema on every request) is skipped; it cost ~1/3 of client CPU.
        if fmt == "json_schema":
            kwargs["extra_body"] = {"response_format": {
                "type": "json_schema",
                "json_schema": {"name": "sentiment_answer", "strict": True, "schema": self._schema(target)},
            }}
        elif fmt == "json_object":
            kwargs["extra_body"] = {"response_format": {"type": "json_object"}}
        last = ""
        for attempt in range(self.max_retries + 1):
            if self.stop is not None and self.stop.is_set():
                raise _GiveUp("failed", f"interrupted ({last or 'before sending'})")
            await self.bucket.acquire()
            out.attempts += 1
            wait: float | None = None
            try:
                return await client.chat.completions.create(model=self.model, messages=messages, **kwargs)
            except (oa.AuthenticationError, oa.PermissionDeniedError) as exc:
                raise TeacherError(
                    f"teacher {self.endpoint} refused the API key (HTTP {exc.status_code}): {_message(exc)}; "
                    "set TICKERPULSE_TEACHER_API_KEY or OPENAI_API_KEY"
                ) from None
            except oa.NotFoundError as exc:
                raise TeacherError(
                    f"teacher {self.endpoint}: model {self.model!r} or the chat-completions route was not found "
                    f"(HTTP 404): {_message(exc)}"
                ) from None
            except oa.RateLimitError as exc:
                kind, last = "429", f"HTTP 429: {_message(exc)}"
                wait = retry_after(exc.response.headers)
            except oa.APITimeoutError:
                kind, last = "timeout", "timed out"
            except oa.APIConnectionError as exc:
                kind, last = "connection", f"connection error: {exc.__cause__ or exc}"
            except oa.APIStatusError as exc:
                if exc.status_code in (400, 422):
                    raise
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    raise _GiveUp("rejected", f"HTTP {exc.status_code}: {_message(exc)}") from None
                kind, last = ("5xx" if exc.status_code >= 500 else str(exc.status_code)), f"HTTP {exc.status_code}: {_message(exc)}"
                wait = retry_after(exc.response.headers)
            out.retries[kind] += 1
            if attempt == self.max_retries:
                break
            if wait is None:
                step = min(self.backoff_cap, self.backoff_base * 2**attempt)
                wait = step / 2 + random.uniform(0, step / 2)  # "equal jitter": never hammer, never sync up
            else:
                wait = min(wait, 4 * self.backoff_cap) + random.uniform(0, 0.1)
            await self._sleep(wait)
        raise _GiveUp("failed", f"gave up after {out.attempts} attempts: {last}")

    async def _sleep(self, seconds: float) -> None:
        if self.stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return


def _content(resp: Any) -> tuple[str | None, str | None]:
    """(assistant text, None) or (None-or-text, reason it cannot be an answer)."""
    try:
        choice = resp.choices[0]
        msg = choice.message
    except (AttributeError, IndexError, TypeError):
        return None, "malformed response: no choices[0].message"
    refusal = getattr(msg, "refusal", None)
    if refusal:
        return None, f"refusal: {refusal}"
    if getattr(choice, "finish_reason", None) == "length":
        return msg.content, "answer truncated at max_tokens (finish_reason=length)"
    if not isinstance(msg.content, str):
        return None, "malformed response: message has no text content"
    return msg.content, None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if body.get("detail"):
            return json.dumps(body["detail"])[:300]
    return str(getattr(exc, "message", exc))[:300]


class GoldTeacher:
    """The dataset's own labels as the teacher: score = the row's own (per-target for FiQA) score when it
    agrees with the label, else `LABEL_SCORES[label]`; the reasoning is the data stage's template sentence,
    which says it is a template (and provenance says `reasoning: template`)."""

    endpoint = "gold"
    model = "gold-labels"
    cacheable = False

    async def label(self, item: Item) -> Outcome:
        from tickerpulse.data.convert import template_reasoning

        if item.gold_label is None:
            return Outcome(status="rejected", reason="no gold label in the input row", reasoning_source="template")
        shown, symbol = resolve_target(item.target)
        reasoning = template_reasoning(item.source, item.gold_label, shown, symbol)
        for score in (item.gold_score, LABEL_SCORES[item.gold_label]):
            if score is None:
                continue
            try:
                ans = SentimentAnswer(target=shown, ticker=symbol, sentiment=item.gold_label, score=score,
                                      reasoning=reasoning)
            except ValueError:
                continue
            return Outcome(status="ok", answer=canonical(ans), reasoning_source="template", response_format="gold")
        return Outcome(status="rejected", reason="gold label and score cannot form a valid answer", reasoning_source="template")

    async def aclose(self) -> None:
        return None
