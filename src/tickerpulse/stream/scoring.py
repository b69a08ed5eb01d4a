"""Scorers: turn (text, ticker) pairs into sentiment answers `{ticker, sentiment, score, reasoning}`.

Three backends behind one small Protocol (`Scorer.score`):
- `engine`: the model in-process (`tickerpulse.serve.engine.SentimentEngine`), fast label scoring or
  generated reasoning. No server needed; the processor pays the model load once.
- `http`: POST `/v1/sentiment` of a running `tickerpulse serve`, chunks sent with bounded concurrency.
- `vader`: the classic lexicon baseline (vaderSentiment), ~10k texts/s; the cheap real scorer for
  pipeline-mechanics tests and the reference line in benchmarks.

A scorer raises on failure (the processor retries with backoff, then isolates and dead-letters the
items that keep failing). `model_version` goes into every document id, so two models' (or two modes')
judgements of one post never overwrite each other.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, runtime_checkable

from tickerpulse.data.sentiment import DEFAULT_PROMPT, SentimentAnswer, load_prompt

Item = tuple[str, str | None]
Mode = Literal["fast", "reasoning"]
SCORERS = ("engine", "http", "vader")


class ScoringError(RuntimeError):
    """The backend answered but not with a valid answer for every item (retryable)."""


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
        self.model_version = model_version(model, adapter, mode)

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

    Request: `{"items": [{"text", "ticker"}], "mode"}`; response: `{"results": [answer, ...]}`.
    """

    name = "http"

    def __init__(self, url: str = "http://127.0.0.1:8080", mode: Mode = "fast", model: str | None = None,
                 concurrency: int = 4, chunk: int = 16, timeout: float = 120.0, api_key: str | None = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.mode, self.model, self.chunk = mode, model, max(1, chunk)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="tp-http-scorer")
        self._lock = threading.Lock()
        served = model or self._served_model()
        self.model_version = model_version(served or "http", None, mode)

    def _served_model(self) -> str | None:
        try:
            r = self._client.get(f"{self.url}/v1/models", timeout=5.0)
            data = r.json().get("data") or []
            return str(data[0]["id"]) if data else None
        except Exception:  # the server may not be up yet; the version then says "http"
            return None

    def _post(self, chunk: list[Item]) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"items": [{"text": t, "ticker": k} for t, k in chunk], "mode": self.mode}
        if self.model:
            body["model"] = self.model
        r = self._client.post(f"{self.url}/v1/sentiment", json=body)
        if r.status_code >= 400:
            raise ScoringError(f"/v1/sentiment answered {r.status_code}: {r.text[:200]}")
        data = r.json()
        results = data.get("results") if isinstance(data, dict) else data
        return validate_answers(chunk, results)

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        chunks = [list(items[i : i + self.chunk]) for i in range(0, len(items), self.chunk)]
        out: list[dict[str, Any]] = []
        for part in self._pool.map(self._post, chunks):
            out += part
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def model_version(model: str, adapter: str | None, mode: str, prompt: str = DEFAULT_PROMPT) -> str:
    """`<model>[+<adapter>]:<prompt version>:<mode>`: what a document id is keyed on."""
    name = model.rstrip("/").split("/")[-1]
    if adapter:
        name += "+" + adapter.rstrip("/").split("/")[-1]
    return f"{name}:{load_prompt(prompt)['version']}:{mode}"


def make_scorer(kind: str, *, model: str = "smollm2-135m", adapter: str | None = None, mode: Mode = "fast",
                url: str = "http://127.0.0.1:8080", concurrency: int = 4, batch_size: int = 16,
                api_key: str | None = None) -> Scorer:
    """Build a scorer by name (`engine`, `http`, `vader`). Raises ValueError for an unknown name."""
    if kind == "vader":
        return VaderScorer()
    if kind == "engine":
        return EngineScorer(model, adapter=adapter, mode=mode, batch_size=batch_size)
    if kind == "http":
        return HttpScorer(url, mode=mode, concurrency=concurrency, chunk=batch_size, api_key=api_key)
    raise ValueError(f"unknown scorer {kind!r}: one of {', '.join(SCORERS)}")
