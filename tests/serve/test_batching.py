"""The batcher keeps failures and long work local: one bad job never fails its batch, deadlines and client
disconnects stop the model's work (sentiment included), the queue is bounded in work items, and `/health`
answers while the model is busy. Real SmolLM2 throughout; faults are real bad inputs, not mocks."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.serve.conftest import API_KEY
from tests.serve.conftest import serving

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
# ~500 tokens each: 200 of them are minutes of fast-mode work on this CPU
LONG_TEXTS = [f"$AAPL {i} " + " ".join(f"revenue{i % 7} guidance margin word{j}" for j in range(420))[:1900]
              for i in range(200)]


@pytest.fixture(scope="module")
def short(engine):
    """A server with a 3 s deadline and a small work-item queue."""
    with serving(engine, timeout=3.0, max_queue=16, max_queue_items=300, default_max_tokens=8) as s:
        yield s


def _busy(server) -> bool:
    return httpx.get(server.url + "/health", timeout=5).json()["busy"]


def _wait_idle(server, limit: float) -> float:
    t0 = time.monotonic()
    while _busy(server):
        assert time.monotonic() - t0 < limit, f"the model was still busy {limit}s later"
        time.sleep(0.05)
    return time.monotonic() - t0


# ------------------------------------------------------------------------------------ one bad job per batch


def test_a_row_that_raises_fails_only_its_job_without_rerunning_the_batch(engine) -> None:
    """Past the edge validation (a seed numpy refuses, sent straight to the batcher) the three good jobs of the
    same batch still get their text and the bad one a JobRejected (HTTP 400); the batch runs once."""
    from tickerpulse.serve.batching import Batcher, JobRejected
    from tickerpulse.serve.decoding import GenRequest
    from tickerpulse.serve.metrics import Metrics

    ids = list(engine.rt.tok("The stock market", add_special_tokens=True)["input_ids"])

    async def run() -> list:
        b = Batcher(engine, Metrics(), window_ms=200)
        await b.start()
        try:
            jobs = [b.enqueue(("generate", None), [GenRequest(prompt_ids=ids, max_new_tokens=3)]) for _ in range(3)]
            jobs.insert(1, b.enqueue(("generate", None), [GenRequest(prompt_ids=ids, max_new_tokens=3, seed=-1)]))
            out = await asyncio.gather(*(b.wait(j) for j in jobs), return_exceptions=True)
            return [out, b.metrics.batch_size["generate"]]
        finally:
            await b.stop()

    (good0, bad, good1, good2), sizes = asyncio.run(run())
    assert sizes.total == 1  # one batch of all four, no rerun
    assert isinstance(bad, JobRejected) and "non-negative" in str(bad)
    texts = [g[0].text for g in (good0, good1, good2)]
    assert all(texts) and len(set(texts)) == 1  # greedy, same prompt


def test_a_constraint_that_fails_mid_decode_stops_only_its_row(engine) -> None:
    """Fault injection into a real grammar constraint: after two tokens its matcher refuses (what a grammar
    that cannot be followed with the tokenizer does). Its row ends with the error; the plain and constrained
    rows beside it give exactly what they give alone."""
    from tickerpulse.serve.constraint import GrammarConstraint
    from tickerpulse.serve.decoding import GenRequest, decode
    from tickerpulse.serve.grammar import UnsupportedSchema, compile_schema, runtime_grammar_tokenizer

    rt = engine.rt
    grammar = compile_schema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                             runtime_grammar_tokenizer(rt))

    class Breaks(GrammarConstraint):
        def accept(self, tok: int, budget_after: int) -> bool:
            self.accepted = getattr(self, "accepted", 0) + 1
            if self.accepted > 2:
                raise UnsupportedSchema("the grammar cannot be followed with this tokenizer: injected fault")
            return super().accept(tok, budget_after)

    ids = list(rt.tok("Reply in JSON:", add_special_tokens=True)["input_ids"])

    def reqs(broken: bool) -> list[GenRequest]:
        out = [GenRequest(prompt_ids=ids, max_new_tokens=12),
               GenRequest(prompt_ids=ids, max_new_tokens=12, constraint=GrammarConstraint(grammar, 12))]
        if broken:
            out.insert(1, GenRequest(prompt_ids=ids, max_new_tokens=12, constraint=Breaks(grammar, 12)))
        return out

    alone = reqs(broken=False)
    for r in alone:
        decode(rt, [r])
    batch = reqs(broken=True)
    decode(rt, batch)
    plain, bad, constrained = batch
    assert isinstance(bad.error, UnsupportedSchema) and bad.finish_reason == "error"
    assert (plain.text, constrained.text) == (alone[0].text, alone[1].text)
    assert plain.error is None and constrained.error is None and json.loads(constrained.text)["a"] is not None


@pytest.mark.parametrize("bad,needle", [
    ({"seed": -1}, "seed"), ({"temperature": 1e-320}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"max_tokens": 10**9}, "max_tokens"), ({"stop": ["x" * 1000]}, "stop"), ({"n": 9}, "n"),
    ({"temperature": 2.5}, "temperature"), ({"seed": 2**64}, "seed"),
])
def test_bad_sampling_parameter_is_a_400_and_its_batch_mates_succeed(short, bad: dict, needle: str) -> None:
    good = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=short.url, headers=HEADERS, timeout=60) as c:
            return await asyncio.gather(*[c.post("/v1/chat/completions", json=good) for _ in range(3)],
                                        c.post("/v1/chat/completions", json={**good, **bad}))

    *ok, refused = asyncio.run(run())
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert refused.status_code == 400, refused.text
    err = refused.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert needle in err["message"]


def test_nan_and_infinity_literals_are_400(short) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = b'{"prompt": "x", "max_tokens": 2, "temperature": ' + literal + b"}"
        r = httpx.post(short.url + "/v1/completions", content=body, headers={**HEADERS, "content-type": "application/json"})
        assert r.status_code == 400 and "temperature" in r.json()["error"]["message"], (literal, r.text)


# ------------------------------------------------------------------------------------------- surrogates


def test_lone_surrogates_become_replacement_characters_in_completions_and_chat(short, engine) -> None:
    want = len(engine.rt.tok("Stocks \ufffd rally", add_special_tokens=True)["input_ids"])
    h = {**HEADERS, "content-type": "application/json"}
    r = httpx.post(short.url + "/v1/completions", headers=h, timeout=60,
                   content=b'{"prompt": "Stocks \\ud800 rally", "max_tokens": 2, "temperature": 0}')
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == want
    r = httpx.post(short.url + "/v1/chat/completions", headers=h, timeout=60,
                   content=b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff x \\ud800"}]},'
                           b' {"role": "assistant", "content": "\\ud83d"}, {"role": "user", "content": "ok"}],'
                           b' "max_tokens": 2, "stop": ["\\udc00"]}')
    assert r.status_code == 200, r.text


# -------------------------------------------------------------------------------- deadlines and disconnects


def test_sentiment_deadline_stops_the_work_and_health_stays_fast(short) -> None:
    """Minutes of fast-mode work with a 3 s deadline: a 504 on time, the model free right after it, and
    /health answering within a second all along (the bench measures its p99)."""
    async def run() -> tuple[httpx.Response, float, list[float]]:
        async with httpx.AsyncClient(base_url=short.url, headers=HEADERS, timeout=60) as c:
            t0 = time.monotonic()
            big = asyncio.ensure_future(c.post("/v1/sentiment", json={"texts": LONG_TEXTS}))
            health = []
            while not big.done():
                h0 = time.monotonic()
                assert (await c.get("/health")).status_code == 200
                health.append(time.monotonic() - h0)
                await asyncio.sleep(0.1)
            return big.result(), time.monotonic() - t0, health

    r, took, health = asyncio.run(run())
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert took < 10, took  # 3 s + slack for a loaded shared CPU
    assert _wait_idle(short, 3.0) < 3.0  # interrupted between decoder layers, not after the whole batch
    assert max(health) < 1.0, max(health)
    t0 = time.monotonic()
    r = httpx.post(short.url + "/v1/sentiment", json={"text": "$AAPL beats"}, headers=HEADERS, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t0 < 3


def test_client_disconnect_cancels_non_streaming_generation(server) -> None:
    """A client that hangs up in the middle of a long non-streaming completion frees the model at once."""
    body = b'{"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 3000, "temperature": 0}'
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    t0 = time.monotonic()
    while not _busy(server):
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    time.sleep(1.0)
    assert _busy(server)  # 3000 tokens take minutes: still generating
    sock.close()
    assert _wait_idle(server, 3.0) < 3.0
    with server.client() as c:  # counted quietly as 499 (no traceback per hang-up to flood the log)
        assert 'route="/v1/completions",status="499"' in c.get("/metrics").text


# ---------------------------------------------------------------------------------------------- limits


def test_work_limits_are_counted_in_items(short) -> None:
    many = ["$AA $BB $CC $DD $EE $FF $GG $HH news"] * 200  # 1,600 (text, ticker) pairs
    r = httpx.post(short.url + "/v1/sentiment", json={"texts": many}, headers=HEADERS, timeout=30)
    assert r.status_code == 400 and "pairs" in r.json()["error"]["message"]
    four = ["$AA $BB $CC $DD news"] * 100  # 400 pairs: allowed per request, more than this server's queue
    r = httpx.post(short.url + "/v1/sentiment", json={"texts": four}, headers=HEADERS, timeout=30)
    assert r.status_code == 400 and "work items" in r.json()["error"]["message"]

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=short.url, headers=HEADERS, timeout=60) as c:
            busy = asyncio.ensure_future(c.post("/v1/sentiment", json={"texts": LONG_TEXTS}))  # takes the model
            while not (await c.get("/health")).json()["busy"]:
                await asyncio.sleep(0.02)
            waiting = asyncio.ensure_future(c.post("/v1/sentiment", json={"texts": LONG_TEXTS[:200]}))
            await asyncio.sleep(0.2)
            third = await c.post("/v1/sentiment", json={"texts": LONG_TEXTS[:150]})
            return [(await busy).status_code, (await waiting).status_code, third.status_code, third.headers.get("retry-after")]

    first, second, third, retry = asyncio.run(run())
    assert third == 429 and retry == "1"  # 200 + 150 items > 300 queued
    assert first == 504 and second == 504
    _wait_idle(short, 5.0)
