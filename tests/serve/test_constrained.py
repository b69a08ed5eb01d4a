"""The JSON-schema automaton and token masks, checked against the independent `jsonschema` validator."""

from __future__ import annotations

import json
import random

import jsonschema
import numpy as np
import pytest

from tickerpulse.data.sentiment import SentimentAnswer, answer_json_schema
from tickerpulse.serve import constrained as C
from tickerpulse.serve.reasoning import answer_node
from tickerpulse.serve.tokenmask import JsonConstraint, TokenVocab

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"enum": ["a", "b", 3, None]}, "maxItems": 3},
        "nick": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
        "ok": {"type": "boolean"},
        "kind": {"$ref": "#/$defs/kind"},
    },
    "required": ["name", "age", "score", "tags", "ok", "kind"],
    "additionalProperties": False,
    "$defs": {"kind": {"type": "string", "enum": ["x", "yy"]}},
}
NESTED = {"type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
    "type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": ["number", "null"]}},
    "required": ["id"]}}}, "required": ["items"]}
FREE = {"type": "object"}
SCHEMAS = {"person": PERSON, "nested": NESTED, "free": FREE, "sentiment": answer_json_schema()}

# (schema, canonical compact text, valid)
CASES = [
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": ["a", 3, null], "ok": true, "kind": "yy"}', True),
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "nick": null, "ok": false, "kind": "x"}', True),
    ("person", '{"name": "", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x"}', False),  # minLength
    ("person", '{"name": "Al", "age": 121, "score": 0.5, "tags": [], "ok": true, "kind": "x"}', False),  # maximum
    ("person", '{"name": "Al", "age": 3.5, "score": 0.5, "tags": [], "ok": true, "kind": "x"}', False),  # integer
    ("person", '{"name": "Al", "age": 30, "score": 0, "tags": [], "ok": true, "kind": "x"}', False),  # exclusive
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": ["c"], "ok": true, "kind": "x"}', False),  # enum
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "ok": true}', False),  # required
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x", "z": 1}', False),
    ("person", '{"name": "A\\"l\\u00e9", "age": 0, "score": 1, "tags": [], "ok": true, "kind": "x"}', True),
    ("nested", '{"items": [{"id": 1, "v": -2.5e3}, {"id": -7}]}', True),
    ("nested", '{"items": []}', False),
    ("nested", '{"items": [{"id": 1}, {"id": 2}, {"id": 3}]}', False),
    ("free", '{"a": [1, {"b": null}, "x"], "c": -0.5e-3, "d": {}}', True),
    ("free", '{"a": tru}', False),
    ("free", '[1]', False),
    ("sentiment", '{"ticker": "BRK.B", "sentiment": "neutral", "score": 0, "reasoning": ""}', True),
    ("sentiment", '{"ticker": "aapl", "sentiment": "neutral", "score": 0, "reasoning": ""}', False),
    ("sentiment", '{"ticker": null, "sentiment": "bullish", "score": 0, "reasoning": ""}', False),
]


@pytest.mark.parametrize("name,text,valid", CASES)
def test_automaton_agrees_with_jsonschema(name: str, text: str, valid: bool) -> None:
    st = C.feed(C.initial_state(C.compile_schema(SCHEMAS[name])), text)
    accepted = st is not None and C.is_complete(st)
    assert accepted == valid
    if valid:
        jsonschema.validate(json.loads(text), SCHEMAS[name])


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_completion_from_any_prefix_is_valid(name: str) -> None:
    """Closing a valid text at every prefix gives JSON that the real validator accepts."""
    node = C.compile_schema(SCHEMAS[name])
    text = next(t for n, t, ok in CASES if n == name and ok)
    for cut in range(len(text) + 1):
        st = C.feed(C.initial_state(node), text[:cut])
        done = text[:cut] + C.completion(st)
        jsonschema.validate(json.loads(done), SCHEMAS[name])


@pytest.mark.parametrize("schema,needle", [
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "object", "patternProperties": {"x": {}}}, "patternProperties"),
    ({"type": "number", "multipleOf": 2}, "multipleOf"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"anyOf": [{"type": "object"}, {"type": "object", "properties": {"a": {}}}]}, "start alike"),
    ({"allOf": [{"type": "object"}, {"required": ["a"]}]}, "allOf"),
    ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "recursive"),
    ({"$ref": "https://example.com/s.json"}, "local"),
    ({"type": "tuple"}, "tuple"),
])
def test_unsupported_schema_features_are_refused(schema: dict, needle: str) -> None:
    with pytest.raises(C.UnsupportedSchema, match=needle):
        C.compile_schema(schema)


@pytest.fixture(scope="module")
def vocab(smollm2_path):
    from tickerpulse.models.loading import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    return TokenVocab.get(tok, len(tok)), tok


@pytest.mark.parametrize("name", ["person", "nested", "free"])
def test_random_token_walks_always_finish_valid_within_budget(vocab, name: str) -> None:
    """Any path through the masks (random tokens, random budgets) ends in schema-valid JSON within budget."""
    v, tok = vocab
    node = C.compile_schema(SCHEMAS[name])
    rng = random.Random(7)
    eos = {tok.eos_token_id}
    for _ in range(6):
        budget = rng.randint(len(C.min_value(node)) + 1, 90)
        con = JsonConstraint(node, v, eos)
        used = len(tok(con.forced(), add_special_tokens=False)["input_ids"])
        while not con.done():
            allowed = np.flatnonzero(con.mask(budget - used).numpy()).tolist()
            assert allowed, f"dead end after {con.text!r}"
            t = rng.choice(allowed)
            if t in eos:
                break
            assert con.accept(t)
            used += 1
            forced = con.forced()
            used += len(tok(forced, add_special_tokens=False)["input_ids"]) if forced else 0
        assert used <= budget
        jsonschema.validate(json.loads(con.text), SCHEMAS[name])


@pytest.mark.parametrize("label", ["negative", "neutral", "positive"])
def test_sentiment_answer_node_forces_a_consistent_score(vocab, label: str) -> None:
    v, tok = vocab
    rng = random.Random(label)
    for ticker in ("AAPL", None):
        prefix = '{"ticker": ' + json.dumps(ticker) + ', "sentiment": "' + label
        con = JsonConstraint(answer_node(ticker, label, 60), v, {tok.eos_token_id}, prefix=prefix)
        assert con.forced() == '", "score": ' + ("-" if label == "negative" else "")
        for _ in range(5):  # random walks from here all give a consistent answer
            walk = JsonConstraint(answer_node(ticker, label, 60), v, {tok.eos_token_id}, prefix=prefix)
            walk.forced()
            while not walk.done():
                walk.accept(int(rng.choice(np.flatnonzero(walk.mask(64).numpy()))))
                walk.forced()
            SentimentAnswer.model_validate(json.loads(prefix + walk.text))
