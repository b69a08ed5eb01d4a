"""One output decoded under a compiled grammar (`tickerpulse.serve.grammar`), closing within its token budget.

Our rule on top of llguidance: every answer closes within `max_tokens`. `GrammarConstraint` keeps a closing
sequence (the tokens a greedy search through the grammar needs to reach an accepting state) and never lets a
sampled token leave less budget than that sequence needs; when the budget is down to it, the closing is
written instead of sampling. Checking a candidate costs `validate_tokens` calls (well under a microsecond) and
a mask computation per greedy step.

Limitations: the closing search is greedy (an upper bound on the shortest ending, not the minimum); while the
budget is far from the last known closing length it is recomputed every `RECHECK` tokens, not at every one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tickerpulse.serve.grammar import Grammar, UnsupportedSchema, clean_error

RECHECK = 8  # tokens between closing-length checks while the budget is far from it
MAX_CLOSING_MASKS = 1000  # work cap of one closing search (~10-60 us per mask)
WINDOW = 48  # budget margin (tokens) above the last closing length under which it is checked every token



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
            raise UnsupportedSchema(clean_error(self.m.get_error()))
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
            raise ValueError(f"prefix {text!r} does not fit the grammar: {clean_error(self.m.get_error())}")
        self.lex.feed(text.encode())
        self._closing, self._fresh = None, False

    def _take(self, ids: list[int]) -> None:
        if ids and not self.m.consume_tokens(ids):
            raise UnsupportedSchema(f"the grammar cannot be followed with this tokenizer: {clean_error(self.m.get_error())}")
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
