"""response_format grammars (llguidance) and the close-within-budget rule, checked against `jsonschema`."""

from __future__ import annotations

import json
import random
import time

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tickerpulse.task.contract import SentimentAnswer, answer_json_schema, answer_prefix
from tickerpulse.serve.constraint import GrammarConstraint, shortest_tokens
from tickerpulse.serve.grammar import MAX_NESTING, UnsupportedSchema, compile_schema, grammar_tokenizer
from tickerpulse.serve.reasoning import answer_schema

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
        "mood": {"enum": ["🚀", "📉", "flat"]},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{2}$"},
    },
    "required": ["name", "age", "score", "tags", "ok", "kind", "mood", "code"],
    "additionalProperties": False,
    "$defs": {"kind": {"type": "string", "enum": ["x", "yy"]}},
}
NESTED = {"type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
    "type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": ["number", "null"]}},
    "required": ["id"]}}}, "required": ["items"]}
ENDS_Z = {"type": "object", "properties": {"s": {"type": "string", "pattern": "z$"}}, "required": ["s"]}
FREE = {"type": "object"}
FORMATS = {"type": "object", "properties": {"e": {"type": "string", "format": "email"},
                                            "t": {"type": "string", "format": "date-time"},
                                            "id": {"type": "string", "format": "uuid"},
                                            "long": {"type": "string", "minLength": 30}},
           "required": ["e", "t", "id", "long"]}
SCHEMAS = {"person": PERSON, "nested": NESTED, "free": FREE, "ends_z": ENDS_Z, "formats": FORMATS,
           "sentiment": answer_json_schema()}

# (schema, compact text, valid)
CASES = [
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": ["a", 3, null], "ok": true, "kind": "yy", '
               '"mood": "🚀", "code": "AB-12"}', True),
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "nick": null, "ok": false, "kind": "x", '
               '"mood": "flat", "code": "ZZ-00"}', True),
    ("person", '{"name": "", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x", "mood": "🚀", "code": "AB-12"}', False),
    ("person", '{"name": "Al", "age": 121, "score": 0.5, "tags": [], "ok": true, "kind": "x", "mood": "🚀", "code": "AB-12"}', False),
    ("person", '{"name": "Al", "age": 30, "score": 0, "tags": [], "ok": true, "kind": "x", "mood": "🚀", "code": "AB-12"}', False),
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x", "mood": "🚀🚀", "code": "AB-12"}', False),
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x", "mood": "🚀", "code": "ab-12"}', False),
    ("person", '{"name": "Al", "age": 30, "score": 0.5, "tags": [], "ok": true, "kind": "x"}', False),  # required
    ("nested", '{"items": [{"id": 1, "v": -2.5e3}, {"id": -7}]}', True),
    ("nested", '{"items": []}', False),
    ("nested", '{"items": [{"id": 1}, {"id": 2}, {"id": 3}]}', False),
    ("free", '{"a": [1, {"b": null}, "x"], "c": -0.5e-3, "d": {}}', True),
    ("free", '{"a": tru}', False),
    ("free", '[1]', False),
    ("ends_z", '{"s": "jazz"}', True),
    ("ends_z", '{"s": "zebra"}', False),
    ("sentiment", '{"target": "BRK.B", "ticker": "BRK.B", "sentiment": "neutral", "score": 0, "reasoning": ""}', True),
    ("sentiment", '{"target": "Brent crude", "ticker": null, "sentiment": "neutral", "score": 0, "reasoning": ""}', True),
    ("sentiment", '{"ticker": "BRK.B", "sentiment": "neutral", "score": 0, "reasoning": ""}', False),  # no target
    ("sentiment", '{"target": null, "ticker": null, "sentiment": "bullish", "score": 0, "reasoning": ""}', False),
]


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from tickerpulse.models.loading import load_tokenizer

    hf = load_tokenizer(smollm2_path)
    return grammar_tokenizer(hf, len(hf), [hf.eos_token_id])


def _accepts(g, text: str) -> bool:
    m = g.matcher()
    return m.consume_tokens(g.tokenizer.tokenize_str(text)) and m.is_accepting()


@pytest.mark.parametrize("name,text,valid", CASES)
def test_grammar_agrees_with_jsonschema(tok, name: str, text: str, valid: bool) -> None:
    assert _accepts(compile_schema(SCHEMAS[name], tok), text) == valid
    if valid:
        jsonschema.validate(json.loads(text), SCHEMAS[name])


@pytest.mark.parametrize("name", ["person", "nested", "free", "ends_z", "sentiment"])
def test_closing_from_any_prefix_is_valid(tok, name: str) -> None:
    """The closing written at any point of a valid text gives JSON the real validator accepts."""
    g = compile_schema(SCHEMAS[name], tok)
    text = next(t for n, t, ok in CASES if n == name and ok)
    for cut in range(len(text) + 1):
        if not text[:cut].encode().decode("utf-8", "ignore") == text[:cut]:
            continue
        c = GrammarConstraint(g, 256)
        c.prefill(text[:cut])
        done = text[:cut].encode() + tok.decode_bytes(c.close())
        jsonschema.validate(json.loads(done), SCHEMAS[name])


UNSATISFIABLE = [
    ({"type": "integer", "minimum": 10, "maximum": 5}, "minimum"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
    ({"type": "object", "properties": {"x": {"type": "number", "minimum": 10, "maximum": 5}}, "required": ["x"]}, "x"),
]


def nested_arrays(depth: int) -> dict:
    s: dict = {"type": "integer"}
    for _ in range(depth):
        s = {"type": "array", "items": s}
    return s


def ref_dag(levels: int) -> dict:
    """Each level references the next twice: 2**levels leaves if expanded, a few KB as written."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}},
                      "required": ["a", "b"]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


@pytest.mark.parametrize("schema,needle", UNSATISFIABLE + [
    (nested_arrays(30), "nests"), (ref_dag(MAX_NESTING + 2), "nests"), ([1, 2], "JSON object"),
    ({"type": "string", "pattern": "(unclosed"}, "."), ({"type": "number", "minimum": float("nan")}, "plain JSON"),
])
def test_bad_schemas_are_refused_in_milliseconds(tok, schema, needle: str) -> None:
    t = time.perf_counter()
    with pytest.raises(UnsupportedSchema, match=needle):
        compile_schema(schema, tok)
    assert time.perf_counter() - t < 0.5


def test_ref_dag_within_the_nesting_cap_compiles_fast_but_its_answer_does_not_fit(tok) -> None:
    t = time.perf_counter()
    g = compile_schema(ref_dag(MAX_NESTING - 2), tok)  # memoised $ref walk: no 2**18 expansion
    assert shortest_tokens(g, 512) is None  # 2**18 integers cannot fit in 512 tokens
    assert shortest_tokens(compile_schema(ref_dag(3), tok), 512) is not None
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize("name", ["person", "nested", "free", "ends_z", "formats"])
def test_random_token_walks_always_finish_valid_within_budget(tok, name: str) -> None:
    """Any path through the masks (random tokens, random budgets) ends in schema-valid JSON within budget."""
    g = compile_schema(SCHEMAS[name], tok)
    rng = random.Random(7)
    shortest = shortest_tokens(g, 512)
    assert shortest is not None
    for _ in range(5):
        budget = rng.randint(shortest, shortest + 60)
        out = _walk(g, budget, rng)
        assert len(out) <= budget
        jsonschema.validate(json.loads(tok.decode_bytes(out)), SCHEMAS[name], format_checker=jsonschema.FormatChecker())


def _walk(g, budget: int, rng: random.Random) -> list[int]:
    c = GrammarConstraint(g, budget)
    out = c.forced_ids()
    while not c.done():
        allowed = c.mask(budget - len(out))
        if allowed is None:
            return out + c.close()
        choices = np.flatnonzero(allowed)
        assert len(choices), f"dead end after {g.tokenizer.decode_bytes(out)!r}"
        t = int(rng.choice(choices))
        if t in g.tokenizer.eos_tokens:
            assert c.complete()
            return out
        if not c.accept(t, budget - len(out) - 1):
            return out + c.close()
        out += [t] + c.forced_ids()
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=st.integers(-50, 50), span=st.integers(-5, 50), min_len=st.integers(0, 6), max_len=st.integers(0, 8),
       budget=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_generated_schemas_are_refused_or_always_answered_validly(tok, lo, span, min_len, max_len, budget, seed) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": lo, "maximum": lo + span},
                                               "s": {"type": "string", "minLength": min_len, "maxLength": max_len}},
              "required": ["n", "s"]}
    try:
        g = compile_schema(schema, tok)
    except UnsupportedSchema:
        assert span < 0 or min_len > max_len
        return
    shortest = shortest_tokens(g, budget)
    if shortest is None:  # the server answers 400: max_tokens too small for this schema
        return
    out = _walk(g, budget, random.Random(seed))
    assert len(out) <= budget
    jsonschema.validate(json.loads(tok.decode_bytes(out)), schema)


_KEYS = ["type", "properties", "items", "required", "enum", "const", "minimum", "maximum", "minLength", "maxLength",
         "pattern", "anyOf", "oneOf", "allOf", "$ref", "$defs", "additionalProperties", "minItems", "maxItems", "format"]
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=12), st.sampled_from(["object", "array", "string", "integer", "number", "#/$defs/a",
                                                          "^a+$", "(", "[", "email", "null"]))
_HOSTILE = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)),
                        max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_HOSTILE)
@example(schema={"const": "\U00040000"})  # SmolLM2 has no token for byte 0xF1: once a RuntimeError (a 500)
def test_hostile_schemas_compile_or_get_a_clear_refusal_fast(tok, schema) -> None:
    """Any JSON as a schema: a grammar or UnsupportedSchema (a 400), in bounded time, never another exception."""
    t = time.perf_counter()
    try:
        g = compile_schema(schema, tok)
    except UnsupportedSchema as exc:
        assert str(exc)
    else:
        shortest_tokens(g, 64)
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize("schema", [{"const": "\U00040000"}, {"enum": ["ok", "\U000BFFFF"]},
                                    {"type": "object", "properties": {"\U00050000": {"type": "null"}},
                                     "required": ["\U00050000"]}])
def test_characters_the_tokenizer_cannot_write_are_refused(tok, schema) -> None:
    with pytest.raises(UnsupportedSchema, match="cannot write"):
        compile_schema(schema, tok)


def test_characters_the_tokenizer_can_write_still_compile(tok) -> None:
    g = compile_schema({"const": "ñ 🚀 \U000E0067"}, tok)  # U+E0067 (a flag tag) starts with 0xF3, which it has
    assert shortest_tokens(g, 64) is not None


def test_deep_schema_documents_are_refused_without_recursion_errors(tok) -> None:
    deep: dict = {}
    for _ in range(50_000):
        deep = {"anyOf": [deep]}
    with pytest.raises(UnsupportedSchema, match="nests"):
        compile_schema(deep, tok)


@pytest.mark.parametrize("label", ["negative", "neutral", "positive"])
def test_sentiment_answer_schema_forces_a_consistent_score(tok, label: str) -> None:
    rng = random.Random(label)
    for target in ("AAPL", "Brent crude", None):
        prefix = answer_prefix(target) + label
        g = compile_schema(answer_schema(label, 60), tok)
        for _ in range(4):
            c = GrammarConstraint(g, 64)
            c.prefill(prefix)
            out = c.forced_ids()
            assert tok.decode_str(out).startswith('", "score":')
            while not c.done():
                allowed = c.mask(64 - len(out))
                if allowed is None:
                    out += c.close()
                    break
                t = int(rng.choice(np.flatnonzero(allowed)))
                if t in tok.eos_tokens:
                    break
                assert c.accept(t, 63 - len(out))
                out += [t] + c.forced_ids()
            SentimentAnswer.model_validate(json.loads(prefix + tok.decode_str(out)))
