"""`response_format` on llguidance: JSON schemas compiled to a grammar, per-token masks, a budget to close in.

llguidance (the grammar engine behind vLLM, SGLang and llama.cpp's structured output) compiles a JSON schema
into a lexer + Earley parser over the model's token trie, with hard limits on grammar size and per-step work,
and handles tokens that are partial UTF-8 sequences (emoji). It reports unsatisfiable schemas (`minimum` above
`maximum`, ...) as errors, which the server answers with 400 (`UnsupportedSchema`), as it does for schemas that
nest deeper than `MAX_NESTING` or whose shortest valid answer does not fit in `max_tokens`.

Our rule on top: every answer closes within `max_tokens`. `GrammarConstraint` keeps a closing sequence (the
text a greedy search finds to reach an accepting state, as tokens) and never lets a sampled token leave less
budget than that sequence needs; when the budget is down to it, the closing is written instead of sampling.
The text is compact JSON with `", "` and `": "` separators and no other whitespace.

Limitations: the closing search is greedy (an upper bound on the shortest ending, not the minimum); while the
budget is far from the last known closing length it is recomputed every `RECHECK` tokens, not at every one.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_NESTING = 20  # objects/arrays inside each other, following $ref (OpenAI's structured outputs allow 10)
MAX_SCHEMA_CHARS = 200_000
MAX_DOC_DEPTH = 200  # dict/list levels of the schema document itself (and $ref chains): recursion stays bounded
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
# Per-request work caps (llguidance defaults are for server-grade grammars; ours are small schemas).
LIMITS = {"max_grammar_size": 200_000, "initial_lexer_fuel": 2_000_000, "step_lexer_fuel": 200_000,
          "step_max_items": 50_000, "max_lexer_states": 100_000, "verbose_errors": False}
RECHECK = 8  # tokens between closing-length checks while the budget is far from it
MAX_CLOSING_MASKS = 1000  # work cap of one closing search (~60 us per mask)
WINDOW = 48  # budget margin (tokens) above the last closing length under which it is checked every token


class UnsupportedSchema(ValueError):
    """A response_format schema the grammar engine cannot serve (HTTP 400)."""


_TOKENIZERS: dict[int, Any] = {}
_TOK_LOCK = threading.Lock()


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
        raise UnsupportedSchema(_clean(msgs[0] if msgs else "invalid schema"))
    g = Grammar(grammar, tokenizer)
    m = g.matcher()
    if m.is_error():
        raise UnsupportedSchema(_clean(m.get_error()))
    with _GRAMMAR_LOCK:
        _GRAMMARS[key] = g
        if len(_GRAMMARS) > 256:
            _GRAMMARS.popitem(last=False)
    return g


def _clean(msg: str) -> str:
    return " ".join(msg.split())[:500]


def response_format_grammar(fmt_type: str, schema: Any, tokenizer: Any) -> Grammar | None:
    """The grammar of an OpenAI `response_format` (None for "text"); json_object = any JSON object."""
    if fmt_type == "text":
        return None
    return compile_schema({"type": "object"} if fmt_type == "json_object" else schema, tokenizer)


# ------------------------------------------------------------------------------------------- constraint


class _Lex:
    """Where the text is lexically (inside a string? which brackets are open?), to pick closing characters."""

    __slots__ = ("stack", "in_str", "esc")

    def __init__(self) -> None:
        self.stack: list[int] = []
        self.in_str = False
        self.esc = False

    def copy(self) -> "_Lex":
        c = _Lex()
        c.stack, c.in_str, c.esc = list(self.stack), self.in_str, self.esc
        return c

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif b == 0x5C:
                    self.esc = True
                elif b == 0x22:
                    self.in_str = False
            elif b == 0x22:
                self.in_str = True
            elif b in (0x7B, 0x5B):
                self.stack.append(b)
            elif b in (0x7D, 0x5D) and self.stack:
                self.stack.pop()


_VALUE_FIRST = '"1234567890ntf-[{'
_STRING_FILL = "a0A .-_"


_CHAR_IDS: dict[int, dict[str, int]] = {}


def _char_ids(tokenizer: Any) -> dict[str, int]:
    """Printable ASCII character -> its single-token id (what the closing search writes with)."""
    hit = _CHAR_IDS.get(id(tokenizer))
    if hit is None:
        hit = _CHAR_IDS[id(tokenizer)] = {c: ids[0] for c in map(chr, range(0x20, 0x7F))
                                          if len(ids := tokenizer.tokenize_str(c)) == 1}
    return hit


class GrammarConstraint:
    """One output constrained to a grammar, closing within its token budget.

    The decode loop calls `forced_ids()` (tokens the grammar forces, fed without sampling), `mask(budget)`
    (allowed ids, or None when only the closing still fits), `accept(id, budget_after)` (False when the token
    would not leave room to close), `close()` (the closing tokens), `complete()` and `done()`.

    Args:
        grammar: a compiled Grammar.
        budget_tokens: limit for the closing search (the request's max_tokens).
    """

    def __init__(self, grammar: Grammar, budget_tokens: int) -> None:
        self.g, self.tok = grammar, grammar.tokenizer
        self.m = grammar.matcher()
        if self.m.is_error():
            raise UnsupportedSchema(_clean(self.m.get_error()))
        self.lex = _Lex()
        self.limit = budget_tokens
        self.n = self.tok.vocab_size
        self.eos = set(self.tok.eos_tokens)
        self._char_ids = _char_ids(self.tok)
        self._closing: list[int] | None = None  # tokens that end the value (from the state when computed)
        self._need = 0  # their number
        self._fresh = False  # computed for the current state
        self._since = 0  # tokens consumed since it was
        self._computed = False

    # -- state

    def complete(self) -> bool:
        """The text so far is a whole valid value (an end-of-sequence token may come now)."""
        return self.m.is_accepting()

    def done(self) -> bool:
        """Nothing but the end may follow."""
        return self.m.is_stopped()

    def in_string(self) -> bool:
        return self.lex.in_str

    def prefill(self, text: str) -> None:
        """Consume text already written (e.g. the part of the answer given in the prompt)."""
        ids = self.tok.tokenize_str(text)
        if not self.m.consume_tokens(ids):
            raise ValueError(f"prefix {text!r} does not fit the grammar: {_clean(self.m.get_error())}")
        self.lex.feed(text.encode())
        self._closing, self._fresh = None, False

    def _take(self, ids: list[int]) -> None:
        if ids and not self.m.consume_tokens(ids):
            raise RuntimeError(f"grammar rejected its own tokens: {_clean(self.m.get_error())}")
        self.lex.feed(self.tok.decode_bytes(ids))

    # -- decode loop API

    def forced_ids(self) -> list[int]:
        """Consume and return the tokens the grammar forces now (possibly none)."""
        out: list[int] = []
        while not self.m.is_stopped() and (ff := self.m.compute_ff_tokens()):
            self._take(ff)
            out += ff
        if out:
            self._advanced(out)
        return out

    def _advanced(self, ids: list[int]) -> None:
        """Keep the closing in step with tokens just consumed (still valid if it started with them)."""
        c = self._closing
        if self._fresh and c is not None and c[: len(ids)] == ids:
            self._closing, self._need = c[len(ids):], self._need - len(ids)
        else:
            self._fresh = False
            self._since += len(ids)

    def _bits(self, m: Any) -> np.ndarray:
        return np.unpackbits(np.frombuffer(m.compute_bitmask(), np.uint8), bitorder="little")[: self.n].view(bool)

    def mask(self, budget: int) -> np.ndarray | None:
        """Allowed ids now (bool array), given `budget` tokens left including this one; None: close now."""
        if self.m.is_error():
            return None
        need = self.need(budget)
        if need is not None and need >= budget:
            return None
        return self._bits(self.m)

    def need(self, budget: int) -> int | None:
        """Tokens the closing takes from here (recomputed when the budget nears it); None if none is known."""
        if not self._fresh and (not self._computed or budget <= self._need + WINDOW or self._since >= RECHECK):
            self._closing, self._computed = self.closing(self.limit), True
            self._need = len(self._closing) if self._closing is not None else self._need
            self._fresh, self._since = True, 0
        return None if self._closing is None else self._need

    def accept(self, token_id: int, budget_after: int | None = None) -> bool:
        """Consume a sampled token. False if it does not fit the grammar, or (given `budget_after`) if the
        closing after it would not fit in the budget left: the token is then rolled back so `close()` works."""
        saved = (self.lex.copy(), self._closing, self._need, self._fresh, self._since)
        if not self.m.consume_token(token_id):
            return False
        self.lex.feed(self.tok.decode_bytes([token_id]))
        self._advanced([token_id])
        if budget_after is not None:
            need = self.need(budget_after)
            # No closing found after it (while one was known before): as unsafe as one that does not fit.
            if (need is None and saved[1] is not None) or (need is not None and need > budget_after):
                self.m.rollback(1)
                self.lex, self._closing, self._need, self._fresh, self._since = saved
                return False
        return True

    def close(self) -> list[int]:
        """Consume and return the closing tokens (empty if none is known: the output is then cut)."""
        ids = self._closing if self._fresh else self.closing(self.limit)
        if not ids:
            return []
        self._take(ids)
        self._closing, self._need, self._fresh = [], 0, True
        return ids

    def closing(self, limit: int) -> list[int] | None:
        """A token sequence (at most `limit` + 1 long) that ends the value from here: forced bytes, then greedy
        closing characters (`"`, the open bracket, the shortest value start); None if none was found."""
        m, lex = self.m.deep_copy(), self.lex.copy()
        out: list[int] = []
        quote = self._char_ids.get('"')
        work = 0
        while len(out) <= limit and work < MAX_CLOSING_MASKS:
            work += 1
            if m.is_error():
                return None
            if m.is_accepting():
                return out
            ff_ids = m.compute_ff_tokens()  # the same tokens `forced_ids` will feed
            if ff_ids:
                if not m.consume_tokens(ff_ids):
                    return None
                lex.feed(self.tok.decode_bytes(ff_ids))
                out += ff_ids
                continue
            ff = m.compute_ff_bytes()
            if ff:
                ids = self.tok.tokenize_bytes(ff)
                if not m.consume_tokens(ids):
                    return None
                lex.feed(ff)
                out += ids
                continue
            if lex.in_str and quote is not None and not m.validate_tokens([quote]):
                ending = self._string_ending(m, quote)
                if ending is not None:
                    if not m.consume_tokens(ending):
                        return None
                    lex.feed(self.tok.decode_bytes(ending))
                    out += ending
                    continue
            bits = self._bits(m)
            pick = None
            if lex.in_str:
                order = ['"', *_STRING_FILL]
            else:
                order = ["}" if lex.stack and lex.stack[-1] == 0x7B else "]", ",", *_VALUE_FIRST, ":", " ", "."]
            for c in order:
                t = self._char_ids.get(c)
                if t is not None and bits[t]:
                    pick = t
                    break
            if pick is None:
                allowed = np.flatnonzero(bits)
                allowed = [int(t) for t in allowed if int(t) not in self.eos]
                if not allowed:
                    return None
                pick = allowed[0]
            if not m.consume_token(pick):
                return None
            lex.feed(self.tok.decode_bytes([pick]))
            out.append(pick)
        return None


    def _string_ending(self, m: Any, quote: int) -> list[int] | None:
        """Tokens that end the open string when the quote cannot come yet (a pattern, format or minLength):
        a sample value of a common format, or one character after which the quote fits. Checked with
        `validate_tokens` (well under a microsecond each), nothing consumed."""
        for ids in _fillers(self.tok, quote):
            if m.validate_tokens(ids) == len(ids):
                return ids
        for c, t in self._char_ids.items():
            if c != "\\" and m.validate_tokens([t, quote]) == 2:
                return [t, quote]
        return None


# Values that satisfy common string formats, from a suffix that fits after a partial value to whole values.
_FILLER_TEXTS = ["aa", ".aa", "a.aa", "@a.aa", "a@a.aa", "0.0.0.0", "::1", "P1D", "00:00:00Z", "2000-01-01",
                 "http://a.aa", "2000-01-01T00:00:00Z", "00000000-0000-0000-0000-000000000000"]
_FILLERS: dict[int, list[list[int]]] = {}


def _fillers(tokenizer: Any, quote: int) -> list[list[int]]:
    hit = _FILLERS.get(id(tokenizer))
    if hit is None:
        hit = _FILLERS[id(tokenizer)] = [tokenizer.tokenize_str(t) + [quote] for t in _FILLER_TEXTS]
    return hit


def shortest_tokens(grammar: Grammar, limit: int) -> int | None:
    """Tokens of the closing from the start (an upper bound on the shortest valid answer); None if > limit."""
    c = GrammarConstraint(grammar, limit)
    forced = c.forced_ids()
    rest = c.closing(limit)
    return None if rest is None or len(forced) + len(rest) > limit else len(forced) + len(rest)
