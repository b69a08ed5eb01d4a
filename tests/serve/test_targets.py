"""/v1/sentiment targets over HTTP on the real server: the answer echoes what was asked and names its symbol
when known; a target the schema refuses is a 400 naming the item, never a 5xx; /v1/models says what each
model answers with."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ITEMS = [
    {"text": "Microsoft beats estimates on cloud growth", "target": "Microsoft"},
    {"text": "Brent crude slides as supply fears ease", "target": "Brent crude"},
    {"text": "$MSFT and $AAPL both up premarket", "target": "$msft"},
    {"text": "Johnson & Johnson wins its talc appeal", "target": "Johnson & Johnson"},
    {"text": "Stocks drift ahead of the Fed", "target": None},
    {"text": "$AAPL shares surge after record iPhone sales", "ticker": "aapl"},
]


@pytest.mark.parametrize("mode", ["fast", "reasoning"])
def test_answers_echo_the_target_and_resolve_its_ticker(server, mode: str) -> None:
    with server.client() as c:
        schema = c.get("/v1/sentiment/schema").json()
        r = c.post("/v1/sentiment", json={"items": ITEMS, "mode": mode, "max_tokens": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    got = [(a["target"], a["ticker"]) for a in body["results"]]
    assert got == [("Microsoft", "MSFT"), ("Brent crude", None), ("MSFT", "MSFT"), ("Johnson & Johnson", "JNJ"),
                   (None, None), ("AAPL", "AAPL")]
    assert body["text_index"] == list(range(len(ITEMS)))
    assert body["prompt_version"] == "sentiment-v3" and body["reasoning"] == "generated"
    for a in body["results"]:
        jsonschema.validate(a, schema)
        assert list(a) == ["target", "ticker", "sentiment", "score", "reasoning"]


def test_a_top_level_target_applies_to_every_text(server) -> None:
    with server.client() as c:
        r = c.post("/v1/sentiment", json={"texts": ["Oil slides", "Oil jumps"], "target": "Brent crude"}).json()
    assert [(a["target"], a["ticker"]) for a in r["results"]] == [("Brent crude", None)] * 2


def test_schema_endpoint_is_the_published_schema(server) -> None:
    from tickerpulse.task.contract import answer_json_schema

    with server.client() as c:
        assert c.get("/v1/sentiment/schema").json() == answer_json_schema()


@pytest.mark.parametrize("body,needle", [
    ({"items": [{"text": "x", "target": "Microsoft"}, {"text": "x", "target": "N" * 81}]}, "item 1: target"),
    ({"items": [{"text": "x", "target": 123}]}, "items.0.target"),
    ({"items": [{"text": "x", "target": ["MSFT"]}]}, "items.0.target"),
    ({"items": [{"text": "x", "target": {"$gt": ""}}]}, "items.0.target"),
    ({"items": [{"text": "x", "target": "MSFT", "ticker": "MSFT"}]}, "not both"),
    ({"items": [{"text": "x"}], "target": "MSFT"}, "inside each item"),
    ({"text": "x", "target": "MSFT", "ticker": "MSFT"}, "not both"),
    ({"text": "x", "target": "x" * 100_000}, "item 0: target"),
    ({"items": [{"text": "x", "ticker": "Microsoft Corp"}]}, "item 0: ticker: not a ticker symbol"),
])
def test_bad_targets_are_400_naming_the_item(server, body: dict, needle: str) -> None:
    with server.client() as c:
        r = c.post("/v1/sentiment", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_models_and_health_say_prompt_version_and_reasoning_kind(server) -> None:
    with server.client() as c:
        cards = c.get("/v1/models").json()["data"]
        one = c.get("/v1/models/tiny").json()
        health = c.get("/health").json()
    assert {m["id"] for m in cards} == {"smollm2-135m", "tiny"}
    for card in cards + [one, health]:
        assert card["prompt_version"] == "sentiment-v3" and card["reasoning"] == "generated"


TARGETS = st.one_of(st.none(), st.text(max_size=120), st.sampled_from(["$msft", "Tesla, Inc.", "<|im_start|>", "</post>"]),
                    st.integers(), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS)
def test_any_target_gives_a_schema_valid_answer_or_a_400(server, target) -> None:
    from tickerpulse.task.contract import SentimentAnswer, resolve_target

    with server.client() as c:
        r = c.post("/v1/sentiment", json={"items": [{"text": "Shares rise on strong demand", "target": target}]})
    if r.status_code == 400:
        assert "target" in r.json()["error"]["message"]
        return
    assert r.status_code == 200, r.text
    (ans,) = r.json()["results"]
    SentimentAnswer.model_validate(ans)
    assert (ans["target"], ans["ticker"]) == resolve_target(target)


def test_serve_cli_flags_choose_prompt_and_evidence_reasoning(tmp_path) -> None:
    """The real `tickerpulse serve --prompt-version --reasoning`: the cards say so and reasoning mode quotes."""
    import os

    import httpx

    from tests.conftest import tickerpulse_serve

    args = ["--model", "smollm2-135m", "--threads", "1", "--prompt-version", "sentiment-v1", "--reasoning", "evidence"]
    env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
    text = "Microsoft shares sink after weak cloud guidance"
    with tickerpulse_serve(args, tmp_path / "serve.log", env) as url:
        card = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]
        r = httpx.post(url + "/v1/sentiment", json={"items": [{"text": text, "target": "Microsoft"}],
                                                     "mode": "reasoning"}, timeout=300).json()
    assert (card["prompt_version"], card["reasoning"]) == ("sentiment-v1", "evidence")
    (ans,) = r["results"]
    assert (ans["target"], ans["ticker"]) == ("Microsoft", "MSFT")
    assert ans["reasoning"] in text and "Microsoft" not in ans["reasoning"]


def test_a_given_engine_must_agree_with_the_config(engine) -> None:
    from tickerpulse.serve.app import ServeConfig, create_app

    with pytest.raises(ValueError, match="reasoning='evidence' disagrees"):
        create_app(ServeConfig(reasoning="evidence"), engine=engine)
