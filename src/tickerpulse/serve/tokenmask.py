"""Token-level masks from the char-level JSON automaton (`tickerpulse.serve.constrained`).

`TokenVocab` decodes every vocabulary id once per tokenizer. `JsonConstraint` holds one output's automaton
state and, before each sampled token, builds the boolean mask of ids that keep the text valid and still
leave room (in the token budget) for the shortest closing text. Inside a free string most of the vocabulary
is allowed, so that case is one vectorized test; elsewhere only tokens whose first character the grammar
accepts are walked character by character.
"""

from __future__ import annotations

import threading
from typing import Any

from tickerpulse.serve import constrained as C

_VOCABS: dict[int, "TokenVocab"] = {}
_VOCAB_LOCK = threading.Lock()


class TokenVocab:
    """Decoded text of each token id ("" for special ids and partial UTF-8 pieces) and fast lookup tables."""

    def __init__(self, tok: Any, size: int) -> None:
        import torch

        anchor = tok.convert_tokens_to_ids("a") if "a" in tok.get_vocab() else 0
        head = tok.decode([anchor], clean_up_tokenization_spaces=False)
        # Decoding [anchor, id] keeps SentencePiece's leading spaces that decoding [id] alone would drop.
        texts = tok.batch_decode([[anchor, i] for i in range(len(tok))], clean_up_tokenization_spaces=False)
        special = set(tok.all_special_ids)
        strs = ["" if i in special or "\ufffd" in t else t[len(head):] for i, t in enumerate(texts)]
        strs += [""] * (size - len(strs))
        self.strs = strs[:size]
        self.size = size
        self.lens = torch.tensor([len(t) for t in self.strs], dtype=torch.long)
        bad = ('"', "\\")
        self.safe = torch.tensor([bool(t) and not any(b in t for b in bad) and all(ord(c) >= 0x20 for c in t)
                                  for t in self.strs])
        self.quote_ids = [i for i, t in enumerate(self.strs)
                          if t and any(b in t for b in bad) and all(ord(c) >= 0x20 for c in t)]
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

    def min_tokens(self) -> int:
        """Characters (an upper bound on tokens) still needed to finish the JSON."""
        rest = C.completion(self.state)
        return 0 if rest is None else len(rest)

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

    def forced(self) -> str:
        """Advance over the characters the grammar forces; return them (the caller feeds their tokens)."""
        text, self.state = C.forced_text(self.state)
        self.text += text
        return text

    def _fits(self, st: tuple, budget: int) -> bool:
        rest = C.completion(st)
        return rest is None or 1 + len(rest) <= budget

    def mask(self, budget: int) -> Any:
        """Bool tensor [vocab]: tokens allowed now, given `budget` tokens left including this one."""
        import torch

        v = self.vocab
        st = self.state
        m = torch.zeros(v.size, dtype=torch.bool)
        if self.complete():
            m[self.eos_ids] = True
        if self.done():
            return m
        top = st[-1]
        if top[0] == "S" and top[3] == 0 and top[1].pattern is None:
            node, n = top[1], top[2]
            rest = C.completion(st)
            tail = 0 if rest is None else len(rest) - (max(0, node.min_len - n) + 1)
            ok = v.safe.clone()
            if node.max_len is not None:
                ok &= v.lens <= node.max_len - n
            if rest is not None:
                need = (node.min_len - n - v.lens).clamp(min=0) + 1 + tail
                ok &= 1 + need <= budget
            m |= ok
            for t in v.quote_ids:
                nxt = C.feed(st, v.strs[t])
                if nxt is not None and self._fits(nxt, budget):
                    m[t] = True
            return m
        firsts = v.ascii_first
        if top[0] == "L":
            firsts = list({*firsts, *(t[top[2]] for t in top[1] if len(t) > top[2])} & v.by_first.keys())
        elif top[0] == "S":
            firsts = list(v.by_first)
        allowed: list[int] = []
        for c in firsts:
            s1 = C.step(st, c)
            if s1 is None:
                continue
            for t in v.by_first[c]:
                s2 = C.feed(s1, v.strs[t][1:])
                if s2 is not None and self._fits(s2, budget):
                    allowed.append(t)
        if allowed:
            m[torch.tensor(allowed)] = True
        return m
