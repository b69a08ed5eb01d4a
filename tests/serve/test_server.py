"""The real server (uvicorn thread, SmolLM2 + a LoRA adapter) through the official openai client and httpx."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest

from tests.serve.conftest import API_KEY

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "likes_stocks": {"type": "boolean"}},
    "required": ["name", "age", "likes_stocks"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def oai(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_models_lists_base_and_adapter(oai) -> None:
    ids = [m.id for m in oai.models.list().data]
    assert ids == ["smollm2-135m", "tiny"]
    assert oai.models.retrieve("tiny").id == "tiny"


def test_chat_and_streaming_chat_agree_greedy(oai) -> None:
    msgs = [{"role": "user", "content": "Name one fruit."}]
    r = oai.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=8, temperature=0)
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 5
    pieces = [c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="smollm2-135m", messages=msgs, max_tokens=8, temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == text and len([p for p in pieces if p]) >= 2


def test_completions_and_streaming_completions(oai) -> None:
    r = oai.completions.create(model="smollm2-135m", prompt="The stock market", max_tokens=6, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens <= 6
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model="smollm2-135m", prompt="The stock market", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_json_schema_and_json_object_response_formats_give_valid_json(oai) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for temperature, seed in ((0, None), (1.0, 3)):
        r = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Describe a person."}],
                                        max_tokens=40, temperature=temperature, seed=seed, response_format=fmt)
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
        assert r.usage.completion_tokens <= 40
    r = oai.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "Reply in prose!"}],
                                    max_tokens=24, response_format={"type": "json_object"}, temperature=0)
    assert isinstance(json.loads(r.choices[0].message.content), dict)  # tight budget: closed in time, never cut


def test_seeded_sampling_is_reproducible(oai) -> None:
    kw = dict(model="smollm2-135m", messages=[{"role": "user", "content": "Say something."}], max_tokens=8,
              temperature=1.0, seed=11)
    assert oai.chat.completions.create(**kw).choices[0].message.content == \
        oai.chat.completions.create(**kw).choices[0].message.content


def test_per_request_adapter_switching(server) -> None:
    body = {"items": [{"text": "$AAPL shares surge after record iPhone sales", "ticker": "AAPL"}]}
    with server.client() as c:
        base = c.post("/v1/sentiment", json=body).json()
        tiny = c.post("/v1/sentiment", json={**body, "model": "tiny"}).json()
        base2 = c.post("/v1/sentiment", json={**body, "model": "smollm2-135m"}).json()
    assert base["model"] == "smollm2-135m" and tiny["model"] == "tiny"
    assert base["results"] == base2["results"]
    assert base["results"][0]["score"] != tiny["results"][0]["score"]


def test_sentiment_endpoint_shapes_ticker_extraction_and_schema(server) -> None:
    with server.client() as c:
        schema = c.get("/v1/sentiment/schema").json()
        r = c.post("/v1/sentiment", json={"texts": ["$AAPL beats, $MSFT lags", "Markets are calm"], "mode": "fast"}).json()
        one = c.post("/v1/sentiment", json={"text": "Oil slides", "ticker": "$xom"}).json()
        reason = c.post("/v1/sentiment", json={"items": [{"text": "$TSLA deliveries miss", "ticker": "TSLA"},
                                                         {"text": "Fed holds rates"}], "mode": "reasoning",
                                               "max_tokens": 10}).json()
    assert [a["ticker"] for a in r["results"]] == ["AAPL", "MSFT", None] and r["text_index"] == [0, 0, 1]
    assert one["results"][0]["ticker"] == "XOM"
    assert reason["mode"] == "reasoning" and reason["results"][0]["reasoning"]
    for ans in r["results"] + one["results"] + reason["results"]:
        jsonschema.validate(ans, schema)


def test_sentiment_asks_about_the_tickers_of_the_tasks_rule(server) -> None:
    """The client's ticker wins (an explicit null is the market); else `questions_of` on what the prompt shows
    of the text (its first 2000 characters), at most 8, the symbols the stream processor judges a post for."""
    from tickerpulse.stream.processor import post_tickers

    symbols = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOG", "META", "NFLX", "AMD"]
    many = "Movers: " + ", ".join(f"${s}" for s in symbols)
    beyond = "x " * 1000 + "$INTC"  # named after the 2000 characters the prompt keeps
    items = [{"text": "$AAPL up", "ticker": None}, {"text": many}, {"text": beyond}, {"text": "$aapl", "ticker": " $msft"}]
    with server.client() as c:
        r = c.post("/v1/sentiment", json={"items": items}).json()
    assert [a["ticker"] for a in r["results"]] == [None, *symbols[:8], None, "MSFT"]
    assert r["text_index"] == [0, *[1] * 8, 2, 3]
    assert post_tickers(many, 8) == symbols[:8]


@pytest.mark.parametrize("body,status,needle", [
    ({"messages": [{"role": "user", "content": "x"}], "model": "nope"}, 404, "not served"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
        "name": "e", "schema": {"type": "array", "uniqueItems": True}}}}, 400, "uniqueItems"),  # email is served now
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, 400, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "best_of": 3}, 400, "best_of"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "response_format": {
        "type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}}, 400, "too small"),
    ({"messages": []}, 400, "messages"),
])
def test_unsupported_or_bad_chat_requests_get_clear_4xx(server, body: dict, status: int, needle: str) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_api_key_required_except_health(server) -> None:
    with server.client(key=None) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.post("/v1/sentiment", json={"text": "x"}).status_code == 401
    with server.client(key="wrong") as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    from openai import AuthenticationError, OpenAI

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_body_limit_gives_413(server) -> None:
    with server.client() as c:
        r = c.post("/v1/sentiment", json={"text": "x" * 1_100_000})
        assert r.status_code == 413
        chunked = c.post("/v1/sentiment", content=iter([b'{"text": "', b"y" * 600_000, b"y" * 500_000, b'"}']),
                         headers={"content-type": "application/json"})
        assert chunked.status_code == 413


def test_overload_gives_429_and_the_server_stays_up(server) -> None:
    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=300) as c:
            body = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 16, "temperature": 0}
            rs = await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(48)])
            return [r.status_code for r in rs]

    codes = asyncio.run(flood())
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0
    with server.client() as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.post("/v1/sentiment", json={"text": "still alive"}).status_code == 200
        metrics = c.get("/metrics").text
    assert 'tickerpulse_requests_total{route="/v1/chat/completions",status="429"}' in metrics
    assert "tickerpulse_request_seconds_bucket" in metrics and "tickerpulse_queue_depth" in metrics
    assert "tickerpulse_tokens_per_second" in metrics
