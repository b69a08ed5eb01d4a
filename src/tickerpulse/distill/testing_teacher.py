"""A small, real OpenAI-protocol teacher server for tests and offline demos.

It speaks `POST /v1/chat/completions` and `GET /v1/models` like any OpenAI-compatible endpoint, answers
from the gold label of the post it finds between <post> and </post> (deterministic score per text), counts
every text it receives, and can be told to misbehave per text, one fault per successive request:

    ok, 429 (with Retry-After / retry-after-ms), 500, slow (sleeps past the client timeout), malformed
    (truncated JSON), prose, out_of_range (score 1.7), contradiction (positive with a negative score),
    wrong_ticker, extra_key.

Run it standalone: `python -m tickerpulse.distill.testing_teacher --gold rows.jsonl --port 8099`
(then `tickerpulse distill --teacher http://127.0.0.1:8099/v1 --teacher-model gold-echo ...`).
It is a test double for the *teacher's answers*, not for the protocol: the client under test is the
official `openai` client talking HTTP to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tickerpulse.task.contract import LABELS, post_of, resolve_target, sanitize_text

FAULTS = ("ok", "429", "500", "slow", "malformed", "prose", "out_of_range", "contradiction", "wrong_ticker", "extra_key")
_SLOT = re.compile(r"^(Target|Ticker):[ \t]*(.*)$", re.M)  # sentiment-v2/v3 show a target, v1 a symbol


@dataclass
class TeacherState:
    """Behaviour and counters of the server (shared with the test that started it)."""

    gold: dict[str, str] = field(default_factory=dict)  # sanitize_text(text) -> label
    faults: dict[str, list[str]] = field(default_factory=dict)  # sanitize_text(text) -> fault per request
    delay: float = 0.0  # seconds added to every answer
    slow_seconds: float = 3.0
    retry_after: float = 0.3  # seconds announced with a 429
    json_schema: bool = True  # False: reject response_format json_schema with HTTP 400, as many servers do
    disagree_every: int = 0  # answer a wrong label for texts whose hash is divisible by this (0: never)
    model: str = "gold-echo"
    api_key: str | None = None  # set: requests without `Authorization: Bearer <key>` get 401
    strict_model: bool = False  # True: a request for any model but `model` gets 404
    received: Counter[str] = field(default_factory=Counter)  # text -> requests that carried it
    arrivals: dict[str, list[float]] = field(default_factory=dict)  # text -> monotonic arrival times
    format_rejections: int = 0
    formats: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.received.values())

    def set_faults(self, texts_to_faults: dict[str, list[str]]) -> None:
        for text, plan in texts_to_faults.items():
            unknown = set(plan) - set(FAULTS)
            if unknown:
                raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
            self.faults[sanitize_text(text)] = list(plan)


def load_gold(path: str | Path) -> dict[str, str]:
    """{sanitized text: gold label} from a raw JSONL/CSV file."""
    from tickerpulse.distill.inputs import load_raw

    return {sanitize_text(r.text): r.label for r in load_raw(path) if r.label}


def _score(text: str, label: str) -> float:
    h = zlib.crc32(text.encode())
    if label == "neutral":
        return ((h % 41) - 20) / 100
    mag = 0.35 + (h % 60) / 100
    return round(mag if label == "positive" else -mag, 2)


def _asked(user: str) -> dict[str, Any]:
    """The answer's head for the prompt's slot: {target, ticker} for `Target:` (the symbol the contract's
    one rule gives), {ticker} for `Ticker:`; a prompt without a slot asks about the market."""
    m = _SLOT.search(user)
    value = None if m is None or m.group(2).strip() == "none" else m.group(2).strip()
    target, ticker = resolve_target(value)
    return {"target": target, "ticker": ticker} if m is not None and m.group(1) == "Target" else {"ticker": ticker}


def _answer(state: TeacherState, text: str, head: dict[str, Any], fault: str) -> str:
    label = state.gold.get(text, "neutral")
    if state.disagree_every and zlib.crc32(text.encode()) % state.disagree_every == 0:
        label = LABELS[(LABELS.index(label) + 1) % 3]
    about = head.get("target") or head["ticker"] or "the market"
    obj: dict[str, Any] = {
        **head,
        "sentiment": label,
        "score": _score(text, label),
        "reasoning": f"Gold-label echo: the post is {label} for {about}.",
    }
    if fault == "out_of_range":
        obj.update(sentiment="positive", score=1.7)
    elif fault == "contradiction":
        obj.update(sentiment="positive", score=-0.6)
    elif fault == "wrong_ticker":
        obj["ticker"] = "ZZZZ"
    elif fault == "extra_key":
        obj["confidence"] = 0.9
    content = json.dumps(obj)
    if fault == "malformed":
        return content[: len(content) // 2]
    if fault == "prose":
        return f"I would say this post is {label}, mostly."
    return content


def create_app(state: TeacherState) -> FastAPI:
    """The FastAPI app over `state`."""
    app = FastAPI(title="tickerpulse gold-echo teacher")

    def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status, headers=headers)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "tickerpulse"}]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        with state.lock:
            return {"requests": state.requests, "distinct_texts": len(state.received),
                    "texts_seen_twice": sum(1 for n in state.received.values() if n > 1),
                    "format_rejections": state.format_rejections, "formats": dict(state.formats)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        if state.api_key and request.headers.get("authorization") != f"Bearer {state.api_key}":
            return error(401, "Incorrect API key provided", "invalid_request_error")
        body = await request.json()
        if state.strict_model and body.get("model") != state.model:
            return error(404, f"The model {body.get('model')!r} does not exist", "invalid_request_error")
        messages = body.get("messages") or []
        user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        text = post_of(user)  # the post as sent, without sentiment-v3's target markers
        if text is None:
            return error(400, "no <post>...</post> in the first user message", "invalid_request_error")
        try:
            head = _asked(user)
        except ValueError as exc:  # a target longer than the contract allows
            return error(400, str(exc), "invalid_request_error")
        fmt = (body.get("response_format") or {}).get("type", "none")
        if fmt == "json_schema" and not state.json_schema:
            with state.lock:
                state.format_rejections += 1
            return error(400, "response_format json_schema is not supported by this server", "invalid_request_error")
        with state.lock:
            state.received[text] += 1
            state.arrivals.setdefault(text, []).append(time.monotonic())
            state.formats[fmt] += 1
            n = state.received[text]
            plan = state.faults.get(text, [])
            fault = plan[n - 1] if n <= len(plan) else "ok"
        if state.delay:
            await asyncio.sleep(state.delay)
        if fault == "429":
            return error(429, "rate limited (injected)", "rate_limit_exceeded", headers={
                "Retry-After": str(math.ceil(state.retry_after)), "retry-after-ms": str(int(state.retry_after * 1000))})
        if fault == "500":
            return error(500, "internal error (injected)", "server_error")
        if fault == "slow":
            await asyncio.sleep(state.slow_seconds)
        content = _answer(state, text, head, fault)
        prompt_tokens = sum(len(m.get("content") or "") for m in messages) // 4
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": f"chatcmpl-{zlib.crc32(text.encode())}-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", state.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    return app


class TeacherServer:
    """Run the app with uvicorn in a background thread on 127.0.0.1 (port 0: a free one)."""

    def __init__(self, state: TeacherState, host: str = "127.0.0.1", port: int = 0):
        self.state, self.host, self.port = state, host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "TeacherServer":
        import uvicorn

        config = uvicorn.Config(create_app(self.state), host=self.host, port=self.port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=1, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="gold-echo-teacher", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test teacher server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "TeacherServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="OpenAI-protocol teacher that answers from gold labels.")
    ap.add_argument("--gold", required=True, help="raw JSONL/CSV with text and label")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    ap.add_argument("--no-json-schema", action="store_true", help="answer 400 to response_format json_schema")
    args = ap.parse_args(argv)
    state = TeacherState(gold=load_gold(args.gold), delay=args.delay, json_schema=not args.no_json_schema)
    server = TeacherServer(state, port=args.port).start()
    print(f"gold-echo teacher on {server.url} ({len(state.gold)} gold texts); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
