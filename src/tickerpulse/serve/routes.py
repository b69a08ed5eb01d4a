"""Route handlers: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/sentiment`, `/health`.

Generation requests become `GenRequest` rows (one per choice) submitted to the batcher; streaming responses
read text pieces the model thread pushes into an asyncio queue and send them as SSE chunks. Non-streaming
routes poll `request.is_disconnected()` while they wait, so a client that hangs up cancels its work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request  # at module level: the routes' string annotations are resolved here

from tickerpulse.serve.openai_api import (
    MAX_EXPANDED_ITEMS,
    MAX_TICKERS_PER_TEXT,
    BadRequest,
    ChatCompletionRequest,
    CompletionRequest,
    ResponseFormat,
    SentimentRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    error_body,
    new_id,
    sse,
    usage,
)


def add_routes(app: Any, ctx: Any) -> None:
    from fastapi.responses import StreamingResponse

    rt = ctx.rt

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": rt.model_name, "adapters": list(rt.adapters), "default_model": ctx.default_model,
                "queue_depth": ctx.batcher.depth(), "queued_items": ctx.batcher.queued_items(),
                "busy": ctx.batcher.busy, "device": str(rt.device),
                "dtype": str(rt.dtype).replace("torch.", ""), **ctx.engine.info()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = [ctx.default_model] + [m for m in rt.model_ids() if m != ctx.default_model]
        return {"object": "list", "data": [_model_card(m, rt, ctx.engine) for m in ids]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        rt.resolve(model_id)
        return _model_card(model_id, rt, ctx.engine)

    @app.get("/v1/sentiment/schema")
    async def sentiment_schema() -> dict[str, Any]:
        return ctx.engine.schema()

    @app.post("/v1/sentiment")
    async def sentiment(req: SentimentRequest, request: Request) -> dict[str, Any]:
        from tickerpulse.serve.engine import DEFAULT_REASONING_TOKENS
        from tickerpulse.task.answers import clean_text
        from tickerpulse.task.contract import sanitize_text
        from tickerpulse.task.questions import questions_of

        name, adapter = ctx.adapter(req.model)
        items: list[tuple[str, str | None]] = []
        index: list[int] = []
        for i, (text, asked, field) in enumerate(req.pairs()):
            text = clean_text(text)
            # The client's target wins (an explicit null asks about the market); else the task's one rule,
            # applied to what the prompt shows of the text (sanitize_text: its first 2000 characters).
            targets = ([_target(i, asked, field)] if field else
                       [q.target for q in questions_of(sanitize_text(text), limit=MAX_TICKERS_PER_TEXT)])
            for t in targets:
                items.append((text, t))
                index.append(i)
            if len(items) > MAX_EXPANDED_ITEMS:
                raise BadRequest(f"the texts name too many tickers: more than {MAX_EXPANDED_ITEMS} (text, ticker) "
                                 "pairs in one request; split it")
        max_tokens = req.max_tokens or DEFAULT_REASONING_TOKENS
        answers = await ctx.batcher.submit(("sentiment", adapter, req.mode, max_tokens), items,
                                           disconnected=request.is_disconnected)
        return {"object": "sentiment", "model": name, "mode": req.mode, **ctx.engine.info(),
                "results": answers, "text_index": index}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request) -> Any:
        from tickerpulse.models.generate import encode_prompt

        name, adapter = ctx.adapter(req.model)
        try:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
            ids = await asyncio.to_thread(encode_prompt, rt.tok, messages)  # a 2 MB prompt must not stall /health
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        except Exception as exc:  # the chat template refused the conversation (e.g. role order)
            raise BadRequest(f"messages: the model's chat template rejected them: {exc}") from None
        reqs = await asyncio.to_thread(_gen_requests, ctx, [ids], req, req.limit(ctx.cfg.default_max_tokens))
        reset = _resetter(reqs, lambda: _gen_requests(ctx, [ids], req, req.limit(ctx.cfg.default_max_tokens)))
        rid = new_id("chatcmpl")
        if req.stream:
            job = ctx.batcher.enqueue(("generate", adapter), reqs, reset=reset)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_stream(ctx, job, reqs, rid, name, chat=True, include_usage=include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        done = await ctx.batcher.submit(("generate", adapter), reqs, disconnected=request.is_disconnected, reset=reset)
        _raise_cancelled(done)
        return chat_response(rid, name, [(r.text, _finish(r)) for r in done], len(ids), sum(r.generated for r in done))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        name, adapter = ctx.adapter(req.model)
        prompts = await asyncio.to_thread(lambda: [list(rt.tok(p, add_special_tokens=True)["input_ids"])
                                                   for p in req.prompts()])
        if any(not p for p in prompts):
            raise BadRequest("prompt: empty prompts are not supported")
        reqs = await asyncio.to_thread(_gen_requests, ctx, prompts, req, req.max_tokens)
        reset = _resetter(reqs, lambda: _gen_requests(ctx, prompts, req, req.max_tokens))
        rid = new_id("cmpl")
        if req.stream:
            job = ctx.batcher.enqueue(("generate", adapter), reqs, reset=reset)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_stream(ctx, job, reqs, rid, name, chat=False, include_usage=include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        done = await ctx.batcher.submit(("generate", adapter), reqs, disconnected=request.is_disconnected, reset=reset)
        _raise_cancelled(done)
        return completion_response(rid, name, [(r.text, _finish(r)) for r in done],
                                   sum(len(p) for p in prompts), sum(r.generated for r in done))


def _target(i: int, value: str | None, field: str) -> str | None:
    """The target a client asked about (its `target`, or its `ticker`, which must be a symbol), as answers echo
    it. Raises BadRequest naming the item."""
    from tickerpulse.task.answers import normalize_ticker
    from tickerpulse.task.contract import resolve_target

    try:
        return normalize_ticker(value) if field == "ticker" else resolve_target(value)[0]
    except ValueError as exc:
        what = "not a ticker symbol" if field == "ticker" else str(exc)
        raise BadRequest(f"item {i}: {field}: {what}: {str(value)[:100]!r}") from None


def _model_card(model_id: str, rt: Any, engine: Any) -> dict[str, Any]:
    """An OpenAI model object plus what /v1/sentiment answers with for it (prompt version, reasoning kind)."""
    kind = "adapter" if model_id in rt.adapters else "base"
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "tickerpulse", "kind": kind,
            "parent": rt.model_name if kind == "adapter" else None, **engine.info()}


def _finish(r: Any) -> str:
    return "length" if r.finish_reason == "length" else "stop"


def _resetter(reqs: list[Any], fresh: Any) -> Any:
    """A Job.reset for generation rows: results cleared and constraints rebuilt (they hold decoding state),
    so the rows can run again alone after their batch failed. Streaming callbacks stay in place."""

    def reset() -> None:
        for r, new in zip(reqs, fresh()):
            r.out_ids, r.text, r.finish_reason, r.generated, r.error = [], "", "", 0, None
            r.constraint = new.constraint

    return reset


def _raise_cancelled(reqs: list[Any]) -> None:
    from tickerpulse.serve.batching import RequestTimeout

    if any(r.finish_reason == "cancelled" for r in reqs):
        raise RequestTimeout("request timed out while generating")


def _stream_error(exc: BaseException | None) -> dict[str, Any]:
    """The SSE error event for a streamed job that failed (None: it was cancelled by its deadline)."""
    from tickerpulse.serve.batching import JobRejected, RequestTimeout

    if exc is None or isinstance(exc, RequestTimeout):
        return error_body(str(exc or "request timed out while generating"), "timeout_error", "timeout")
    if isinstance(exc, JobRejected):
        return error_body(str(exc), "invalid_request_error", "invalid_request")
    return error_body(f"internal error: {type(exc).__name__}", "server_error", "internal_error")


def response_grammar(rt: Any, fmt: ResponseFormat | None) -> Any:
    """The llguidance Grammar of a response_format (None for plain text). Raises UnsupportedSchema."""
    from tickerpulse.serve.grammar import response_format_grammar, runtime_grammar_tokenizer

    if fmt is None or fmt.type == "text":
        return None
    tokenizer = runtime_grammar_tokenizer(rt)
    schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else None  # type: ignore[union-attr]
    return response_format_grammar(fmt.type, schema, tokenizer)


def _gen_requests(ctx: Any, prompts: list[list[int]], req: Any, max_tokens: int) -> list[Any]:
    """One GenRequest per (prompt, choice), checked against the server limits. Compiles the response_format
    (bounded, but not free: call it off the event loop)."""
    from tickerpulse.serve.decoding import GenRequest
    from tickerpulse.serve.constraint import GrammarConstraint, shortest_tokens
    from tickerpulse.serve.grammar import UnsupportedSchema

    rt = ctx.rt
    context = int(getattr(rt.hf.config, "max_position_embeddings", 8192) or 8192)
    grammar = response_grammar(rt, req.response_format)
    if grammar is not None and shortest_tokens(grammar, max_tokens) is None:
        raise UnsupportedSchema(f"max_tokens {max_tokens} is too small for this schema: no valid JSON for it fits "
                                "(raise max_tokens or simplify the schema)")
    out = []
    for ids in prompts:
        if len(ids) > ctx.cfg.max_prompt_tokens:
            raise BadRequest(f"prompt has {len(ids)} tokens; this server accepts at most {ctx.cfg.max_prompt_tokens}")
        if len(ids) + max_tokens > context:
            raise BadRequest(f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of {context}")
        for j in range(req.n):
            con = GrammarConstraint(grammar, max_tokens) if grammar is not None else None
            seed = None if req.seed is None else req.seed + j
            out.append(GenRequest(prompt_ids=ids, max_new_tokens=max_tokens, temperature=req.temperature,
                                  top_p=req.top_p, seed=seed, stop=req.stops(), constraint=con))
    return out


async def _stream(ctx: Any, job: Any, reqs: list[Any], rid: str, model: str, chat: bool,
                  include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks for a queued generation job; the model thread pushes pieces into `q`."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def push(i: int, piece: str) -> None:  # on the model thread
        job.streamed = True  # text reached the client: the job can no longer be rerun alone
        loop.call_soon_threadsafe(q.put_nowait, (i, piece))

    for i, r in enumerate(reqs):
        r.on_text = lambda piece, i=i: push(i, piece)
    created = int(time.time())

    def chunk(i: int, text: str | None, finish: str | None) -> str:
        if chat:
            delta = {} if text is None else {"content": text}
            return sse(chat_chunk(rid, model, i, delta, finish, created))
        return sse(completion_chunk(rid, model, i, text or "", finish, created))

    try:
        if chat:
            for i in range(len(reqs)):
                yield sse(chat_chunk(rid, model, i, {"role": "assistant", "content": ""}, None, created))
        while True:
            getter = asyncio.ensure_future(q.get())
            left = job.deadline - time.monotonic()
            done, _ = await asyncio.wait({getter, job.future}, timeout=max(0.0, left) + 0.5,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                i, piece = getter.result()
                yield chunk(i, piece, None)
                continue
            getter.cancel()
            if not done:
                job.cancel.set()
                yield sse(error_body("request timed out while generating", "timeout_error", "timeout"))
                break
            while not q.empty():
                i, piece = q.get_nowait()
                yield chunk(i, piece, None)
            exc = job.future.exception()
            if exc is not None or any(r.finish_reason == "cancelled" for r in reqs):
                yield sse(_stream_error(exc))
                break
            for i, r in enumerate(reqs):
                yield chunk(i, None, _finish(r))
            if include_usage:
                body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": created, "model": model, "choices": [],
                        "usage": usage(sum(r.prompt_tokens for r in reqs), sum(r.generated for r in reqs))}
                yield sse(body)
            break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()  # a client that hangs up stops its rows at the next token
