"""The FastAPI app: OpenAI-compatible routes, `/v1/sentiment`, `/health`, `/metrics`.

`create_app(config)` loads the model (or takes a ready `SentimentEngine`), puts the dynamic batcher in front
of it and wraps everything in the API-key / body-size guard. `run(config)` serves it with uvicorn.

Errors use the OpenAI error body `{"error": {"message", "type", "param", "code"}}`: 400 bad request or
unsupported option/schema, 401 API key, 404 unknown model, 413 body too large, 429 queue full, 503 shutting
down, 504 timeout. A 500 means a fault of the server, never of the input, and fails only its own request.

Shutdown: on SIGTERM the batcher stops first (queued and running work is cancelled, waiting requests get a
503 at once), then uvicorn gives connections `SHUTDOWN_GRACE` seconds and cancels what is left; the model
thread is a daemon, so even work that cannot be interrupted does not keep the process alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import Field, ValidationError

from tickerpulse.config import StrictModel

log = logging.getLogger("tickerpulse.serve")

SHUTDOWN_GRACE = 3.0  # seconds in-flight requests get after SIGTERM before they are cancelled


class ServeConfig(StrictModel):
    """Everything `tickerpulse serve` takes (CLI flags map 1:1)."""

    model: str = Field("smollm2-135m", description="Base (or fused/named) model: built-in name, hub id or folder.")
    adapters: dict[str, str] = Field(default_factory=dict, description="name -> run/adapter folder, loaded at start.")
    default_model: str | None = Field(None, description="Model used when a request names none (first adapter, else base).")
    host: str = Field("127.0.0.1", description="Bind address; loopback by default.")
    port: int = Field(8080, ge=0, le=65535)
    device: str = "auto"
    dtype: str = Field("auto", description="auto (fp32 on CPU; bf16 where the model folder's serving.json asks for it and the CPU has native bf16) | float32 | bfloat16 | float16.")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's choice).")
    prompt_version: str | None = Field(None, description="Sentiment prompt the model was trained with (default: its serving.json's prompt_version, else the task's default).")
    reasoning: Literal["evidence", "generated"] | None = Field(None, description="What reasoning mode returns: evidence spans or generated text (default: serving.json's reasoning, else generated).")
    max_batch_size: int = Field(32, ge=1, le=512, description="Most rows per model batch.")
    max_queue: int = Field(256, ge=1, description="Most queued requests; more get 429.")
    max_queue_items: int = Field(4096, ge=1, description="Most queued work items (sentiment (text, ticker) pairs + generated outputs); more get 429.")
    timeout: float = Field(60.0, gt=0, description="Seconds per request before 504.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body; more get 413.")
    batch_window_ms: float = Field(3.0, ge=0, le=1000, description="How long to gather concurrent requests.")
    max_prompt_tokens: int = Field(4096, ge=16, description="Longest chat/completion prompt accepted.")
    default_max_tokens: int = Field(512, ge=1, description="Chat max_tokens when the request gives none.")


def create_app(config: ServeConfig | None = None, engine: Any = None) -> Any:
    """Build the FastAPI app (loads the model unless `engine` is given)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from tickerpulse.serve.batching import (
        Batcher,
        ClientGone,
        JobRejected,
        QueueFull,
        RequestTimeout,
        ShuttingDown,
        TooMuchWork,
    )
    from tickerpulse.serve.grammar import UnsupportedSchema
    from tickerpulse.serve.metrics import Metrics
    from tickerpulse.serve.openai_api import BadRequest
    from tickerpulse.serve.runtime import UnknownModel
    from tickerpulse.serve.security import GuardMiddleware, api_key_from_env

    cfg = config or ServeConfig()
    if engine is None:
        from tickerpulse.serve.engine import SentimentEngine

        engine = SentimentEngine(cfg.model, device=cfg.device, dtype=cfg.dtype, adapters=cfg.adapters, threads=cfg.threads,
                                 prompt_version=cfg.prompt_version, reasoning=cfg.reasoning)
    for key, have in (("prompt_version", engine.prompt_version), ("reasoning", engine.reasoning_kind)):
        if getattr(cfg, key) not in (None, have):  # a given engine is already built: say so, never ignore
            raise ValueError(f"{key}={getattr(cfg, key)!r} disagrees with the given engine's {have!r}")
    rt = engine.rt
    default = cfg.default_model or (next(iter(rt.adapters), None) or rt.model_name)
    rt.resolve(default)  # fail at start, not per request
    metrics = Metrics()
    batcher = Batcher(engine, metrics, cfg.max_batch_size, cfg.max_queue, cfg.batch_window_ms, cfg.timeout,
                      cfg.max_queue_items)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="tickerpulse", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.batcher, app.state.metrics, app.state.config = engine, batcher, metrics, cfg
    ctx = _Ctx(cfg, engine, batcher, metrics, default)

    def err(status: int, message: str, etype: str = "invalid_request_error", code: str | None = None,
            param: str | None = None, headers: dict[str, str] | None = None) -> Any:
        from tickerpulse.serve.openai_api import error_body
        from tickerpulse.task.answers import replace_surrogates

        # a message may quote the input: lone surrogates in it would make the JSON encoder fail
        return JSONResponse(error_body(replace_surrogates(message), etype, code, param), status_code=status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> Any:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "request body"
            parts.append(f"{where}: {e.get('msg')}")
        return err(400, "; ".join(parts) or "invalid request", code="invalid_request")

    @app.exception_handler(ValidationError)
    async def _invalid_model(_r: Request, exc: ValidationError) -> Any:
        return err(400, str(exc.errors()[0].get("msg")), code="invalid_request")

    @app.exception_handler(BadRequest)
    @app.exception_handler(JobRejected)
    @app.exception_handler(TooMuchWork)
    async def _bad(_r: Request, exc: ValueError) -> Any:
        return err(400, str(exc), code="invalid_request")

    @app.exception_handler(ClientGone)
    async def _gone(_r: Request, exc: ClientGone) -> Any:  # quietly: a hostile client must not flood the log
        return Response(status_code=499)

    @app.exception_handler(ShuttingDown)
    async def _down(_r: Request, exc: ShuttingDown) -> Any:
        return err(503, str(exc), "server_error", "shutting_down", headers={"Retry-After": "1"})

    @app.exception_handler(UnsupportedSchema)
    async def _schema(_r: Request, exc: UnsupportedSchema) -> Any:
        return err(400, f"response_format: {exc}", code="unsupported_schema", param="response_format")

    @app.exception_handler(UnknownModel)
    async def _unknown(_r: Request, exc: UnknownModel) -> Any:
        return err(404, str(exc), code="model_not_found", param="model")

    @app.exception_handler(QueueFull)
    async def _full(_r: Request, exc: QueueFull) -> Any:
        return err(429, str(exc), "rate_limit_error", "queue_full", headers={"Retry-After": "1"})

    @app.exception_handler(RequestTimeout)
    async def _timeout(_r: Request, exc: RequestTimeout) -> Any:
        return err(504, str(exc), "timeout_error", "timeout")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> Any:
        return err(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _crash(_r: Request, exc: Exception) -> Any:
        log.exception("internal error")
        return err(500, f"internal error: {type(exc).__name__}", "server_error", "internal_error")

    app.add_middleware(_RequestMetrics, metrics=metrics)  # type: ignore[arg-type]

    from tickerpulse.serve import routes

    routes.add_routes(app, ctx)

    @app.get("/metrics")
    async def _metrics() -> Any:
        metrics.queue_depth = batcher.depth()
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    guarded = GuardMiddleware(app, api_key_from_env(), cfg.max_body_bytes,
                              on_reject=lambda path, status: metrics.request("guard", status, 0.0))
    guarded.state = app.state  # type: ignore[attr-defined]
    return guarded


class _RequestMetrics:
    """Pure-ASGI request counter (Starlette's BaseHTTPMiddleware would hide client disconnects from routes)."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def send_status(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.request(getattr(route, "path", "other"), status, time.perf_counter() - t0)


class _Ctx:
    """What the route functions need, in one object."""

    def __init__(self, cfg: ServeConfig, engine: Any, batcher: Any, metrics: Any, default: str) -> None:
        self.cfg, self.engine, self.batcher, self.metrics, self.default_model = cfg, engine, batcher, metrics, default
        self.rt = engine.rt

    def adapter(self, model: str | None) -> tuple[str, str | None]:
        """(model id to report, adapter name or None) for a request's `model` field."""
        name = model or self.default_model
        return name, self.rt.resolve(name)


def run(config: ServeConfig, engine: Any = None) -> None:
    """Load the model (unless `engine` is given) and serve until SIGINT/SIGTERM.

    After uvicorn's shutdown, a model thread still stuck in work that could not be interrupted is abandoned
    with `os._exit`, so the process always ends a few seconds after the signal."""
    import os
    import sys
    import threading

    import uvicorn

    app = create_app(config, engine=engine)
    batcher = app.state.batcher

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await batcher.stop()  # answer waiting requests (503) before uvicorn waits for their connections
            await super().shutdown(sockets)

    _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info", access_log=False,
                           timeout_graceful_shutdown=SHUTDOWN_GRACE)).run()
    if any(t.name == "tp-model" and t.is_alive() for t in threading.enumerate()):
        log.warning("exiting with model work still running (it could not be interrupted)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

