"""Token-level masks from the char-level JSON automaton (`tickerpulse.serve.constrained`).

`TokenVocab` decodes every vocabulary id once per tokenizer. `JsonConstraint` holds one output's automaton
state and, before each sampled token, builds the boolean mask of ids that keep the text valid and still
leave room (in the token budget) for the shortest closing text. Inside a free string most of the vocabulary
is allowed, so that case is one vectorized test; elsewhere only tokens whose first character the grammar
accepts are walked character by character.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from tickerpulse.serve import constrained as C

_VOCABS: dict[int, "TokenVocab"] = {}
_VOCAB_LOCK = threading.Lock()


class TokenVocab:
    """Decoded text of each token id ("" for special ids and partial UTF-8 pieces) and fast lookup tables."""

    def __init__(self, tok: Any, size: int) -> None:
        anchor = tok.convert_tokens_to_ids("a") if "a" in tok.get_vocab() else 0
        head = tok.decode([anchor], clean_up_tokenization_spaces=False)
        # Decoding [anchor, id] keeps SentencePiece's leading spaces that decoding [id] alone would drop.
        texts = tok.batch_decode([[anchor, i] for i in range(len(tok))], clean_up_tokenization_spaces=False)
        special = set(tok.all_special_ids)
        strs = ["" if i in special or "\ufffd" in t else t[len(head):] for i, t in enumerate(texts)]
        strs += [""] * (size - len(strs))
        self.strs = strs[:size]
        self.size = size
        self.lens = np.array([len(t) for t in self.strs], dtype=np.int64)
        bad = ('"', "\\")
        printable = [bool(t) and all(ord(c) >= 0x20 for c in t) for t in self.strs]
        self.safe = np.array([p and not any(b in t for b in bad) for p, t in zip(printable, self.strs)])
        self.quote_ids = [i for i, (p, t) in enumerate(zip(printable, self.strs)) if p and any(b in t for b in bad)]
        self.by_first: dict[str, list[int]] = {}
        for i, t in enumerate(self.strs):
            if t:
                self.by_first.setdefault(t[0], []).append(i)
        self.ascii_first = [c for c in self.by_first if " " <= c <= "~"]

    @classmethod
    def get(cls, tok: Any, size: int) -> "TokenVocab":
        """The (cached) vocabulary of a tokenizer."""
        with _VOCAB_LOCK:
            v = _VOCABS.get(id(tok))
            if v is None or v.size != size:
                v = _VOCABS[id(tok)] = cls(tok, size)
            return v


# state -> [(token id, characters its completion still needs)] for tokens that fit the grammar there
_CANDIDATES: OrderedDict[Any, list[tuple[int, int]]] = OrderedDict()
_CAND_LOCK = threading.Lock()


def _cached(key: Any, compute: Any) -> list[tuple[int, int]]:
    with _CAND_LOCK:
        hit = _CANDIDATES.get(key)
        if hit is not None:
            _CANDIDATES.move_to_end(key)
            return hit
    val = compute()
    with _CAND_LOCK:
        _CANDIDATES[key] = val
        if len(_CANDIDATES) > 20000:
            _CANDIDATES.popitem(last=False)
    return val


def _need(st: tuple) -> int:
    rest = C.completion(st)
    return 0 if rest is None else len(rest)


class JsonConstraint:
    """One output constrained to a schema node.

    Args:
        node: compiled schema (`constrained.compile_schema`).
        vocab: the model's TokenVocab.
        eos_ids: ids that end the output (allowed once the JSON is complete).
        prefix: text already written (e.g. `{"ticker": "AAPL", "sentiment": "` in the prompt).
    """

    def __init__(self, node: Any, vocab: TokenVocab, eos_ids: set[int], prefix: str = "") -> None:
        self.vocab, self.eos_ids = vocab, sorted(i for i in eos_ids if i < vocab.size)
        self.state = C.feed(C.initial_state(node), prefix)
        if self.state is None:
            raise ValueError(f"prefix {prefix!r} does not fit the schema")
        self.text = ""

    def done(self) -> bool:
        """The value is closed (object/array/string ended): nothing may follow."""
        return self.state[-1] == ("R", True)

    def complete(self) -> bool:
        return C.is_complete(self.state)

    def accept(self, token_id: int) -> bool:
        """Consume a sampled token; False if it does not fit (the caller then stops this output)."""
        if token_id in self.eos_ids:
            return self.complete()
        nxt = C.feed(self.state, self.vocab.strs[token_id])
        if nxt is None:
            return False
        self.state = nxt
        self.text += self.vocab.strs[token_id]
        return True

    def close(self) -> str | None:
        """Write the shortest completion now (when the budget is spent); returns it, or None if unknown."""
        rest = C.completion(self.state)
        if rest is None:
            return None
        self.state = C.feed(self.state, rest)
        self.text += rest
        return rest

    def forced(self) -> str:
        """Advance over the characters the grammar forces; return them (the caller feeds their tokens)."""
        text, self.state = C.forced_text(self.state)
        self.text += text
        return text

    def mask(self, budget: int) -> Any:
        """Bool tensor [vocab]: tokens allowed now, given `budget` tokens left including this one.

        A token is allowed when the text stays valid and the shortest completion after it (in characters,
        an upper bound on tokens) fits in the budget left after it.
        """
        import torch

        v, st = self.vocab, self.state
        m = np.zeros(v.size, dtype=bool)
        if self.complete():
            m[self.eos_ids] = True
        if self.done():
            return torch.from_numpy(m)
        top = st[-1]
        if top[0] == "S" and top[3] == 0 and top[1].pattern is None:
            node, n = top[1], top[2]
            rest = C.completion(st)
            tail = 0 if rest is None else len(rest) - (max(0, node.min_len - n) + 1)
            ok = v.safe.copy()
            if node.max_len is not None:
                ok &= v.lens <= node.max_len - n
            if rest is not None:
                ok &= 2 + np.maximum(node.min_len - n - v.lens, 0) + tail <= budget
            m |= ok
            # Tokens with quotes/backslashes do not depend on how long a free string already is.
            key = ("S", st[:-1], node, n if node.min_len or node.max_len is not None else -1)
            cands = _cached(key, lambda: self._walk(st, v.quote_ids))
        else:
            cands = _cached(st, lambda: self._walk_all(st))
        allowed = [t for t, need in cands if 1 + need <= budget]
        if allowed:
            m[allowed] = True
        return torch.from_numpy(m)

    def _walk(self, st: tuple, ids: list[int]) -> list[tuple[int, int]]:
        out = []
        for t in ids:
            nxt = C.feed(st, self.vocab.strs[t])
            if nxt is not None:
                out.append((t, _need(nxt)))
        return out

    def _walk_all(self, st: tuple) -> list[tuple[int, int]]:
        v = self.vocab
        top = st[-1]
        firsts = v.ascii_first
        if top[0] == "L":
            firsts = list({*firsts, *(t[top[2]] for t in top[1] if len(t) > top[2])} & v.by_first.keys())
        elif top[0] == "S":
            firsts = list(v.by_first)
        out = []
        for c in firsts:
            s1 = C.step(st, c)
            if s1 is None:
                continue
            for t in v.by_first[c]:
                s2 = C.feed(s1, v.strs[t][1:])
                if s2 is not None:
                    out.append((t, _need(s2)))
        return out
