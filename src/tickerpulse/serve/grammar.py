"""`response_format` on llguidance: JSON schemas compiled to a grammar, per-token masks, a budget to close in.

llguidance (the grammar engine behind vLLM, SGLang and llama.cpp's structured output) compiles a JSON schema
into a lexer + Earley parser over the model's token trie, with hard limits on grammar size and per-step work,
and handles tokens that are partial UTF-8 sequences (emoji). It reports unsatisfiable schemas (`minimum` above
`maximum`, ...) as errors, which the server answers with 400 (`UnsupportedSchema`), as it does for schemas that
nest deeper than `MAX_NESTING` or whose shortest valid answer does not fit in `max_tokens`.

The text is compact JSON with `", "` and `": "` separators and no other whitespace. Decoding with a compiled
grammar, within a token budget, is `tickerpulse.serve.constraint`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_NESTING = 20  # objects/arrays inside each other, following $ref (OpenAI's structured outputs allow 10)
MAX_SCHEMA_CHARS = 200_000
MAX_DOC_DEPTH = 200  # dict/list levels of the schema document itself (and $ref chains): recursion stays bounded
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
# Per-request work caps (llguidance defaults are for server-grade grammars; ours are small schemas).
LIMITS = {"max_grammar_size": 200_000, "initial_lexer_fuel": 2_000_000, "step_lexer_fuel": 200_000,
          "step_max_items": 50_000, "max_lexer_states": 100_000, "verbose_errors": False}


class UnsupportedSchema(ValueError):
    """A response_format schema the grammar engine cannot serve (HTTP 400)."""


_TOKENIZERS: dict[int, Any] = {}
_TOK_LOCK = threading.Lock()
_UNWRITABLE: dict[int, tuple[Any, frozenset[int]]] = {}  # id(llguidance tokenizer) -> (it, bytes no token spells)


def runtime_grammar_tokenizer(rt: Any) -> Any:
    """The (cached) llguidance tokenizer of a serving Runtime's model: its vocabulary and end tokens."""
    return grammar_tokenizer(rt.tok, rt.hf.config.vocab_size, sorted(rt.eos_ids))


def grammar_tokenizer(tok: Any, vocab_size: int, eos_ids: Sequence[int] | None = None) -> Any:
    """The (cached) llguidance tokenizer of a Hugging Face fast tokenizer (built once, ~0.5 s)."""
    import llguidance

    with _TOK_LOCK:
        hit = _TOKENIZERS.get(id(tok))
        if hit is not None and hit[0] is tok and hit[1].vocab_size == vocab_size:
            return hit[1]
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise UnsupportedSchema("response_format needs a fast (Rust) tokenizer; this model has none")
        backend = type(backend).from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
        eos = sorted({int(i) for i in (eos_ids or [tok.eos_token_id]) if i is not None and int(i) < vocab_size})
        lt = llguidance.LLTokenizer(backend.to_str(), n_vocab=vocab_size, eos_token=eos)
        _TOKENIZERS[id(tok)] = (tok, lt)
        return lt


@dataclass(frozen=True)
class Grammar:
    """A compiled response_format: llguidance grammar text for one tokenizer."""

    text: str
    tokenizer: Any

    def matcher(self) -> Any:
        import llguidance

        return llguidance.LLMatcher(self.tokenizer, self.text, log_level=0, limits=llguidance.LLParserLimits(**LIMITS))


def _nesting(schema: Any) -> int:
    """Deepest object/array nesting a schema allows, following local $refs once each (memoised).

    Raises:
        UnsupportedSchema: the schema document (or a $ref chain) is deeper than MAX_DOC_DEPTH.
    """
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), dict):
                defs.update({f"#/{key}/{k}": v for k, v in schema[key].items()})
    memo: dict[str, int] = {}
    visiting: set[str] = set()

    def walk(s: Any, d: int) -> int:
        if d > MAX_DOC_DEPTH:
            raise UnsupportedSchema(f"the schema document nests more than {MAX_DOC_DEPTH} levels (or $refs chain that deep)")
        if isinstance(s, list):
            return max((walk(x, d + 1) for x in s), default=0)
        if not isinstance(s, dict):
            return 0
        ref = s.get("$ref")
        here = 0
        if isinstance(ref, str) and ref in defs:
            if ref not in memo and ref not in visiting:  # a recursive $ref adds nothing more here
                visiting.add(ref)
                memo[ref] = walk(defs[ref], d + 1)
                visiting.discard(ref)
            here = memo.get(ref, 0)
        container = s.get("type") in ("object", "array") or any(k in s for k in ("properties", "items"))
        inner = max((walk(v, d + 1) for k, v in s.items() if k not in _NOT_SCHEMAS and isinstance(v, (dict, list))),
                    default=0)
        return max(here, inner + (1 if container else 0))

    return walk(schema, 0)


_NOT_SCHEMAS = {"$defs", "definitions", "enum", "const", "default", "examples"}


_GRAMMARS: OrderedDict[tuple[int, str], Grammar] = OrderedDict()
_GRAMMAR_LOCK = threading.Lock()


def compile_schema(schema: Any, tokenizer: Any) -> Grammar:
    """JSON schema (dict) -> Grammar. Bounded in size and time; cached per schema text.

    Raises:
        UnsupportedSchema: not an object, too large or deep, unsatisfiable, or beyond the engine's limits.
    """
    import llguidance

    if not isinstance(schema, dict):
        raise UnsupportedSchema("the schema must be a JSON object")
    try:
        text = json.dumps(schema, allow_nan=False)
    except RecursionError:
        raise UnsupportedSchema(f"the schema document nests more than {MAX_DOC_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise UnsupportedSchema(f"the schema is not plain JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise UnsupportedSchema(f"the schema has {len(text)} characters; at most {MAX_SCHEMA_CHARS} are accepted")
    key = (id(tokenizer), text)
    with _GRAMMAR_LOCK:
        if key in _GRAMMARS:
            _GRAMMARS.move_to_end(key)
            return _GRAMMARS[key]
    _check_writable(schema, tokenizer)
    if (depth := _nesting(schema)) > MAX_NESTING:
        raise UnsupportedSchema(f"the schema nests objects/arrays {depth} levels deep (following $ref); "
                                f"at most {MAX_NESTING} are supported")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UnsupportedSchema(str(exc)) from None
    is_error, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, tokenizer, limits=llguidance.LLParserLimits(**LIMITS))
    if is_error:
        raise UnsupportedSchema(clean_error(msgs[0] if msgs else "invalid schema"))
    g = Grammar(grammar, tokenizer)
    m = g.matcher()
    if m.is_error():
        raise UnsupportedSchema(clean_error(m.get_error()))
    with _GRAMMAR_LOCK:
        _GRAMMARS[key] = g
        if len(_GRAMMARS) > 256:
            _GRAMMARS.popitem(last=False)
    return g


def _unwritable_bytes(tokenizer: Any) -> frozenset[int]:
    """Bytes no token of the vocabulary spells (SmolLM2 lacks 0xF1/0xF2, the lead bytes of U+40000-U+BFFFF)."""
    hit = _UNWRITABLE.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:  # kept with its tokenizer, as _TOKENIZERS is: an id is not reused
        hit = _UNWRITABLE[id(tokenizer)] = (tokenizer, frozenset(
            b for b in range(256) if tokenizer.decode_bytes(tokenizer.tokenize_bytes(bytes([b]))) != bytes([b])))
    return hit[1]


def _check_writable(schema: Any, tokenizer: Any) -> None:
    """Refuse a schema with a non-ASCII character the model cannot write (its grammar would force tokens that
    drop bytes, and the engine would reject them mid-answer). ASCII is always fine: JSON escapes control bytes.

    Raises:
        UnsupportedSchema: naming the first such character.
    """
    missing = _unwritable_bytes(tokenizer)
    if not missing:
        return
    stack = [schema]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack += list(x.keys()) + list(x.values())
        elif isinstance(x, list):
            stack += x
        elif isinstance(x, str) and not x.isascii():
            for ch in x:
                if ord(ch) > 127 and any(b in missing for b in ch.encode("utf-8", "surrogatepass")):
                    raise UnsupportedSchema(f"the schema needs the character U+{ord(ch):04X}, which this model's "
                                            "tokenizer cannot write")


def clean_error(msg: str) -> str:
    """An engine message on one line, bounded (it goes into a 400 body)."""
    return " ".join(msg.split())[:500]


def response_format_grammar(fmt_type: str, schema: Any, tokenizer: Any) -> Grammar | None:
    """The grammar of an OpenAI `response_format` (None for "text"); json_object = any JSON object."""
    if fmt_type == "text":
        return None
    return compile_schema({"type": "object"} if fmt_type == "json_object" else schema, tokenizer)
