"""Scorers: turn (text, ticker) pairs into sentiment answers `{ticker, sentiment, score, reasoning}`.

Three backends behind one small Protocol (`Scorer.score`):
- `engine`: the model in-process (`tickerpulse.serve.engine.SentimentEngine`), fast label scoring or
  generated reasoning. No server needed; the processor pays the model load once.
- `http`: POST `/v1/sentiment` of a running `tickerpulse serve`, chunks sent with bounded concurrency.
- `vader`: the classic lexicon baseline (vaderSentiment), ~10k texts/s; the cheap real scorer for
  pipeline-mechanics tests and the reference line in benchmarks.

A scorer raises on failure, and the exception says whose fault it is, because the processor must treat
the two very differently:
- `ScorerUnavailable` (HTTP 408/425/429/5xx, timeouts, refused connections, a garbled response body): the
  backend is down or overloaded, every post would fail alike. The processor pauses on the same batch
  (backoff, honouring Retry-After) and commits and dead-letters nothing until the backend answers.
- `ScorerFatal` (HTTP 401/403, 404/405: a wrong key, URL or model): retrying cannot help. The processor
  stops with the message, nothing committed (`stream process` exits with `EXIT_SCORER_FATAL`, which the
  `stream run` supervisor does not restart).
- anything else, e.g. `ScoringError` (an invalid answer for an item, or `ItemRejected`: HTTP 400/413/422
  for the request): an item fault. The processor retries, then scores each item alone and dead-letters
  only the items that still fail alone.

`model_version` goes into every document id, so two models' (or two modes') judgements of one post never
overwrite each other. The http scorer learns it from the server's `/v1/models` (`ready()`), waiting while
the server is unreachable, and never makes one up: a made-up version would give a re-delivered post a
second id (a duplicate). Limitation: an item that deterministically makes the server answer 5xx looks
like an outage, so it pauses the stream (heartbeat status `paused` with the reason) instead of being
dead-lettered.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tickerpulse.task.contract import DEFAULT_PROMPT, SentimentAnswer

if TYPE_CHECKING:
    from tickerpulse.stream.config import StreamConfig

log = logging.getLogger("tickerpulse.stream.scoring")
Item = tuple[str, str | None]
Mode = Literal["fast", "reasoning"]
SCORERS = ("engine", "http", "vader")
EXIT_SCORER_FATAL = 78  # sysexits EX_CONFIG: `stream process` refused by its scorer; the supervisor won't restart it
RETRY_AFTER_CAP_S = 600.0  # a Retry-After longer than this is read as this (a hostile or broken header)


class ScoringError(RuntimeError):
    """An item fault: the backend answered, but not with a valid answer for every item (retried, then the
    items are scored alone and the ones that still fail are dead-lettered)."""


class ItemRejected(ScoringError):
    """The backend rejected the request's content (HTTP 400/413/422): an item fault that a retry of the same
    request cannot fix (the processor goes straight to scoring the items alone)."""


class ScorerUnavailable(RuntimeError):
    """A systemic, transient fault (down, overloaded, timing out): pause and retry the same items.
    `retry_after` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ScorerFatal(RuntimeError):
    """A systemic fault retrying cannot fix (wrong API key, forbidden, wrong URL or model): stop."""


class ScoringInterrupted(RuntimeError):
    """A stop was requested while waiting for an unavailable scorer (the batch stays uncommitted)."""


@runtime_checkable
class Scorer(Protocol):
    """Judges (text, ticker) pairs. `score` returns one answer dict per item, in order."""

    name: str
    model_version: str

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        ...

    def close(self) -> None:
        ...


def validate_answers(items: Sequence[Item], answers: Any) -> list[dict[str, Any]]:
    """Check a backend's answers: one per item, each valid against the task schema; the ticker is the
    one asked for (a model may echo another). Raises ScoringError naming the first bad answer."""
    if not isinstance(answers, list) or len(answers) != len(items):
        n = len(answers) if isinstance(answers, list) else type(answers).__name__
        raise ScoringError(f"expected {len(items)} answers, got {n}")
    out = []
    for i, ((_, ticker), a) in enumerate(zip(items, answers)):
        if not isinstance(a, dict):
            raise ScoringError(f"answer {i} is a {type(a).__name__}, not an object")
        try:
            ans = SentimentAnswer.model_validate({**a, "ticker": ticker, "reasoning": str(a.get("reasoning") or "")[:400]})
        except Exception as exc:  # pydantic ValidationError: a model answer that breaks the schema
            raise ScoringError(f"answer {i} invalid: {exc}".splitlines()[0]) from None
        out.append(ans.model_dump())
    return out


class VaderScorer:
    """VADER compound score; labels by VADER's own convention (|compound| >= 0.05)."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._an = SentimentIntensityAnalyzer()
        self.model_version = "vader-3.3.2"

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        out = []
        for text, ticker in items:
            s = self._an.polarity_scores(text)
            c = float(s["compound"])
            label = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"
            out.append({"ticker": ticker, "sentiment": label, "score": round(c, 3),
                        "reasoning": f"VADER lexicon: pos {s['pos']:.2f}, neg {s['neg']:.2f}, compound {c:+.2f}"})
        return out

    def close(self) -> None:
        pass


class EngineScorer:
    """The model in-process through the serve stage's `SentimentEngine`."""

    name = "engine"

    def __init__(self, model: str = "smollm2-135m", adapter: str | None = None, mode: Mode = "fast",
                 batch_size: int = 16) -> None:
        try:
            from tickerpulse.serve.engine import SentimentEngine
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("tickerpulse"):
                raise
            from tickerpulse.config import ConfigError

            raise ConfigError("--scorer engine needs tickerpulse.serve.engine, which this build lacks: "
                              "use --scorer http (a running server) or --scorer vader") from None

        self.engine = SentimentEngine(model, adapter=adapter)
        self.mode, self.batch_size = mode, batch_size
        self.model_version = model_version(model, adapter, mode, self.engine.prompt_version)

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(items), self.batch_size):
            chunk = list(items[i : i + self.batch_size])
            out += validate_answers(chunk, self.engine.analyze(chunk, mode=self.mode))
        return out

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


class HttpScorer:
    """`/v1/sentiment` of a running server: chunks of `chunk` items, at most `concurrency` in flight.

    Request: `{"items": [{"text", "ticker"}], "mode"}`; response: `{"results": [answer, ...]}`. The API key
    goes in `Authorization: Bearer` (never logged, never in an error message). Call `ready()` before
    scoring: it learns `model_version` from `/v1/models`.
    """

    name = "http"

    def __init__(self, url: str = "http://127.0.0.1:8080", mode: Mode = "fast", model: str | None = None,
                 concurrency: int = 4, chunk: int = 16, timeout: float = 120.0, api_key: str | None = None,
                 api_key_env: str | None = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.mode, self.model, self.chunk = mode, model, max(1, chunk)
        self._key_hint = f"${api_key_env}" if api_key_env else "the API key"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="tp-http-scorer")
        self.model_version: str | None = None  # set by ready(); never guessed

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        """One request; transport failures and non-2xx statuses become the fault classes above."""
        import httpx

        try:
            r = self._client.request(method, f"{self.url}{path}", **kw)
        except httpx.TimeoutException as exc:
            raise ScorerUnavailable(f"{path}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ScorerUnavailable(f"{path}: {type(exc).__name__}: {exc}"[:300]) from None
        check_status(r.status_code, f"{path} answered {r.status_code}: {r.text[:200]}",
                     r.headers.get("retry-after"), key_hint=self._key_hint)
        try:
            return r.json()
        except ValueError:
            raise ScorerUnavailable(f"{path} answered {r.status_code} with a body that is not JSON") from None

    def ready(self, stop: threading.Event | None = None, on_wait: Callable[[str, float], None] | None = None,
              max_wait_s: float | None = None, backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> str:
        """Ask `/v1/models` which model the server serves and set `model_version` from it, waiting (with
        backoff, interruptible by `stop`) while the server is unavailable.

        Returns: the model version.
        Raises:
            ScorerFatal: 401/403 (key), 404 (not a tickerpulse/OpenAI-compatible server), no model listed.
            ScorerUnavailable: still unavailable after `max_wait_s` (None: wait until `stop`).
            ScoringInterrupted: `stop` was set while waiting.
        """
        if self.model_version:
            return self.model_version
        waited, k = 0.0, 0
        while True:
            try:
                data = self._request("GET", "/v1/models", timeout=min(10.0, self._client.timeout.read or 10.0))
                break
            except ScorerUnavailable as exc:
                delay = backoff_delay(k, backoff_s, max_backoff_s, exc.retry_after)
                if max_wait_s is not None and waited + delay > max_wait_s:
                    raise
                log.warning("waiting for the scorer at %s (retry in %.1fs): %s", self.url, delay, exc)
                if on_wait:
                    on_wait(str(exc), delay)
                if (stop.wait(delay) if stop else time.sleep(delay)):
                    raise ScoringInterrupted(f"stopped while waiting for {self.url}: {exc}") from None
                waited, k = waited + delay, k + 1
        ids = [m.get("id") for m in (data.get("data") if isinstance(data, dict) else None) or [] if isinstance(m, dict)]
        served = self.model or next((i for i in ids if isinstance(i, str) and i), None)
        if not served:
            raise ScorerFatal(f"{self.url}/v1/models lists no model: is this a tickerpulse server?")
        card = next((m for m in data.get("data") or [] if isinstance(m, dict) and m.get("id") == served), {})
        self.model_version = model_version(served, None, self.mode, card.get("prompt_version") or DEFAULT_PROMPT)
        return self.model_version

    def _post(self, chunk: list[Item]) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"items": [{"text": t, "ticker": k} for t, k in chunk], "mode": self.mode}
        if self.model:
            body["model"] = self.model
        data = self._request("POST", "/v1/sentiment", json=body)
        results = data.get("results") if isinstance(data, dict) else data
        return validate_answers(chunk, results)

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        if not self.model_version:
            self.ready(max_wait_s=0)  # a scorer used without ready(): one try, no made-up version
        chunks = [list(items[i : i + self.chunk]) for i in range(0, len(items), self.chunk)]
        out: list[dict[str, Any]] = []
        for part in self._pool.map(self._post, chunks):
            out += part
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), clamped to
    [0, RETRY_AFTER_CAP_S]; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if secs != secs:  # NaN
        return None
    return min(max(0.0, secs), RETRY_AFTER_CAP_S)


def check_status(status: int, message: str, retry_after: str | None = None, key_hint: str = "the API key") -> None:
    """Raise the fault class of an HTTP status (nothing for 1xx-3xx): 401/403/404/405 -> ScorerFatal,
    408/425/429/5xx -> ScorerUnavailable, other 4xx -> ItemRejected."""
    if status < 400:
        return
    if status in (401, 403):
        raise ScorerFatal(f"{message} (check {key_hint}: it must match the server's TICKERPULSE_API_KEY)")
    if status in (404, 405):
        raise ScorerFatal(f"{message} (check --url and the model name)")
    if status in (408, 425, 429) or status >= 500:
        raise ScorerUnavailable(message, parse_retry_after(retry_after))
    raise ItemRejected(message)


def backoff_delay(k: int, first_s: float, max_s: float, retry_after: float | None = None) -> float:
    """The k-th wait (k from 0) of a pause: exponential from `first_s`, capped at `max_s`, never shorter
    than the server's Retry-After (itself capped at RETRY_AFTER_CAP_S)."""
    delay = min(max_s, first_s * 2 ** min(k, 30))
    return max(delay, min(retry_after, RETRY_AFTER_CAP_S)) if retry_after is not None else delay


def model_version(model: str, adapter: str | None, mode: str, prompt: Any = DEFAULT_PROMPT) -> str:
    """`<model>[+<adapter>]:<prompt version>:<mode>`: what a document id is keyed on. The prompt version is the
    one the model answers with (its engine's, or the server's `/v1/models` card), so a sentiment-v1 and a v2
    model of one name never share document ids; one that is not a plain version name reads `unknown`."""
    name = model.rstrip("/").split("/")[-1]
    if adapter:
        name += "+" + adapter.rstrip("/").split("/")[-1]
    version = prompt if isinstance(prompt, str) and _VERSION_RE.match(prompt) else "unknown"
    return f"{name}:{version}:{mode}"


_VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


def make_scorer(kind: str, *, model: str = "smollm2-135m", adapter: str | None = None, mode: Mode = "fast",
                url: str = "http://127.0.0.1:8080", concurrency: int = 4, batch_size: int = 16,
                api_key: str | None = None, api_key_env: str | None = None, timeout: float = 120.0) -> Scorer:
    """Build a scorer by name (`engine`, `http`, `vader`). Raises ValueError for an unknown name."""
    if kind == "vader":
        return VaderScorer()
    if kind == "engine":
        return EngineScorer(model, adapter=adapter, mode=mode, batch_size=batch_size)
    if kind == "http":
        return HttpScorer(url, mode=mode, concurrency=concurrency, chunk=batch_size, api_key=api_key,
                          api_key_env=api_key_env, timeout=timeout)
    raise ValueError(f"unknown scorer {kind!r}: one of {', '.join(SCORERS)}")


def scorer_from_config(cfg: StreamConfig, concurrency: int | None = None) -> Scorer:
    """The scorer `cfg` describes; the http scorer's key is read here from the `cfg.api_key_env` variable
    (the config holds only the variable's name, so no key lands in stream.yaml)."""
    key = (os.environ.get(cfg.api_key_env, "").strip() or None) if cfg.scorer == "http" else None
    return make_scorer(cfg.scorer, model=cfg.model, adapter=cfg.adapter, mode=cfg.mode, url=cfg.url,
                       concurrency=concurrency or cfg.concurrency, batch_size=cfg.score_batch, api_key=key,
                       api_key_env=cfg.api_key_env, timeout=cfg.scorer_timeout)
