"""response_format through the real server (SmolLM2, uvicorn thread) on the llguidance grammar engine."""

from __future__ import annotations

import json
import threading
import time

import httpx
import jsonschema
import pytest

from tests.serve.test_constrained import nested_arrays, ref_dag

RICH = {
    "type": "object",
    "properties": {
        "mood": {"enum": ["🚀", "📉", "😐"]},
        "company": {"$ref": "#/$defs/company"},
        "code": {"type": "string", "pattern": "^[A-Z]{3,4}$"},
    },
    "required": ["mood", "company", "code"],
    "additionalProperties": False,
    "$defs": {"company": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                             "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
                          "required": ["name", "rating"], "additionalProperties": False}},
}


def _fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def _chat(schema: dict, max_tokens: int = 60, **kw) -> dict:
    return {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Describe $TSLA as JSON."}],
            "max_tokens": max_tokens, "temperature": 0, "response_format": _fmt(schema), **kw}


def test_emoji_ref_and_pattern_schema_is_served_valid(server) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=_chat(RICH))
        assert r.status_code == 200, r.text
        body = r.json()
        text = body["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(text), RICH)
        assert body["usage"]["completion_tokens"] <= 60
        # the same through /v1/completions, sampled, and streamed
        r = c.post("/v1/completions", json={"model": "smollm2-135m", "prompt": "A stock as JSON:", "max_tokens": 60,
                                            "temperature": 1.0, "seed": 5, "response_format": _fmt(RICH)})
        assert r.status_code == 200, r.text
        jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), RICH)
        pieces = []
        with c.stream("POST", "/v1/chat/completions", json=_chat(RICH, stream=True)) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    for ch in json.loads(line[6:]).get("choices", []):
                        pieces.append(ch.get("delta", {}).get("content") or "")
        assert "".join(pieces) == text


@pytest.mark.parametrize("max_tokens", [33, 40])  # 33: the closing from the start
def test_tight_budget_still_closes_the_json(server, max_tokens: int) -> None:
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=_chat(RICH, max_tokens=max_tokens, temperature=1.0, seed=1))
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), RICH)
    assert r.json()["usage"]["completion_tokens"] <= max_tokens


@pytest.mark.parametrize("schema", [
    {"type": "integer", "minimum": 10, "maximum": 5},
    {"type": "string", "minLength": 5, "maxLength": 2},
    {"type": "array", "minItems": 3, "maxItems": 1},
    nested_arrays(30),
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 500}}, "required": ["a"]},  # > max_tokens
])
def test_unsatisfiable_schemas_get_400_in_milliseconds(server, schema: dict) -> None:
    with server.client() as c:
        t = time.perf_counter()
        r = c.post("/v1/chat/completions", json=_chat(schema, max_tokens=64))
        took = time.perf_counter() - t
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and err["code"] == "unsupported_schema" and err["message"]
    assert took < 1.0


def test_pattern_ending_in_z_is_served_quickly(server) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "z$"}}, "required": ["s"]}
    with server.client() as c:
        t = time.perf_counter()
        r = c.post("/v1/chat/completions", json=_chat(schema, max_tokens=30))
        took = time.perf_counter() - t
    assert r.status_code == 200, r.text
    out = json.loads(r.json()["choices"][0]["message"]["content"])
    jsonschema.validate(out, schema)
    assert took < 20.0


def test_health_answers_while_a_ref_dag_schema_is_in_flight(server) -> None:
    result: dict = {}

    def send() -> None:
        with server.client() as c:
            t = time.perf_counter()
            result["r"] = c.post("/v1/chat/completions", json=_chat(ref_dag(18), max_tokens=512))
            result["s"] = time.perf_counter() - t

    th = threading.Thread(target=send)
    th.start()
    worst = 0.0
    with httpx.Client(base_url=server.url, timeout=5) as h:
        while th.is_alive() or not worst:
            t = time.perf_counter()
            assert h.get("/health").status_code == 200
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.02)
    th.join()
    assert worst < 2.0
    r = result["r"]
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:  # 2**18 integers do not fit in 512 tokens
        assert "max_tokens" in r.json()["error"]["message"] and result["s"] < 5.0
    else:
        jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), ref_dag(18))
