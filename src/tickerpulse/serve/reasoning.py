"""Reasoning mode of the sentiment engine: the label pass and a schema-constrained continuation in one decode.

The prompt ends with `answer_prefix(ticker)`, so the first sampled token is the label: it is restricted to
the three label tokens and taken greedily (the fast mode's argmax, so both modes always agree). From then on
the output is constrained to the answer schema specialised to that label: the score's range follows the label
(positive > 0, negative < 0, neutral within +-0.5) and the reasoning is a JSON string of bounded length.
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from tickerpulse.data.sentiment import LABELS, MAX_REASONING_CHARS, NEUTRAL_BAND, SentimentAnswer, answer_prefix
from tickerpulse.serve import constrained as C
from tickerpulse.serve.decoding import GenRequest, decode
from tickerpulse.serve.calibration import LabelCalibration
from tickerpulse.serve.tokenmask import JsonConstraint, TokenVocab

_ONE = Fraction(1)
_BAND = Fraction(str(NEUTRAL_BAND))
_SCORE = {
    "positive": C.Num(lo=Fraction(0), hi=_ONE, lo_excl=True),
    "negative": C.Num(lo=-_ONE, hi=Fraction(0), hi_excl=True),
    "neutral": C.Num(lo=-_BAND, hi=_BAND),
}


# '", "score": -0.01, "reasoning": ""}' plus slack: the closing text the budget must always leave room for.
_FIXED_CHARS = 40


@lru_cache(maxsize=4096)
def answer_node(ticker: str | None, label: str, max_chars: int = MAX_REASONING_CHARS) -> Any:
    """The answer schema with the ticker and label fixed and the score range of the label."""
    props = (("ticker", C.Lit((json.dumps(ticker),))), ("sentiment", C.Lit((json.dumps(label),))),
             ("score", _SCORE[label]), ("reasoning", C.Str(max_len=max_chars)))
    return C.Obj(props=props, required=frozenset(k for k, _ in props))


class SentimentConstraint:
    """First token: one of the label tokens (probabilities recorded); then the label's answer schema."""

    def __init__(self, ticker: str | None, label_ids: list[int], vocab: TokenVocab, eos_ids: set[int],
                 calibration: LabelCalibration | None = None, max_tokens: int = 48) -> None:
        self.ticker, self.label_ids, self.vocab, self.eos_ids = ticker, label_ids, vocab, eos_ids
        self.calibration, self.max_tokens = calibration or LabelCalibration(), max_tokens
        self.reason_tokens = 0  # tokens sampled inside the reasoning string
        self.inner: JsonConstraint | None = None
        self.probs: Any = None

    def observe(self, logits: Any) -> None:
        if self.inner is None:
            self.probs = self.calibration.probs(np.asarray(logits[self.label_ids], dtype=np.float64))

    def mask(self, budget: int) -> Any:
        import torch

        if self.inner is not None:
            if self.inner.state[-1][0] == "S":  # inside the reasoning: its own budget, plus '"}' to close
                budget = min(budget, self.max_tokens - self.reason_tokens + 2)
            return self.inner.mask(budget)
        m = np.zeros(self.vocab.size, dtype=bool)
        if self.probs is not None:  # the calibrated label (what fast mode answers), not the raw argmax
            m[self.label_ids[int(np.argmax(self.probs))]] = True
        else:
            m[self.label_ids] = True
        return torch.from_numpy(m)

    def accept(self, token_id: int) -> bool:
        if self.inner is not None:
            self.reason_tokens += self.inner.state[-1][0] == "S"
            return self.inner.accept(token_id)
        label = LABELS[self.label_ids.index(token_id)]
        self.inner = JsonConstraint(answer_node(self.ticker, label), self.vocab, self.eos_ids,
                                    prefix=answer_prefix(self.ticker) + self.vocab.strs[token_id])
        return True

    def forced(self) -> str:
        return self.inner.forced() if self.inner is not None else ""

    def close(self) -> str | None:
        return self.inner.close() if self.inner is not None else None

    def done(self) -> bool:
        return self.inner is not None and self.inner.done()

    def complete(self) -> bool:
        return self.inner is not None and self.inner.complete()


def reason(engine: Any, adapter: str | None, norm: list[tuple[str, str | None]], encoded: list[tuple[list[int], bool]],
           max_tokens: int) -> list[dict[str, Any]]:
    """Answers with generated score and reasoning for (text, ticker) items already encoded by the engine."""
    from tickerpulse.serve.engine import make_answer

    rt = engine.rt
    vocab = TokenVocab.get(rt.tok, rt.hf.config.vocab_size)
    calib = engine._calib.get(adapter, LabelCalibration())
    reqs, cons = [], []
    for (_, ticker), (ids, uses_prefix) in zip(norm, encoded):
        con = SentimentConstraint(ticker, engine._label_ids, vocab, rt.eos_ids, calib, max(1, max_tokens))
        full = engine._prefix_ids + ids if uses_prefix else ids
        # max_tokens bounds the free part; the fixed JSON around it is allowed on top (budget counted in chars)
        reqs.append(GenRequest(prompt_ids=full, max_new_tokens=max(1, max_tokens) + _FIXED_CHARS, constraint=con))
        cons.append(con)
    with rt.use(adapter):
        for flag in (True, False):
            group = [r for r, (_, u) in zip(reqs, encoded) if u == flag]
            for i in range(0, len(group), 16):
                decode(rt, group[i : i + 16], adapter, engine._prefix_ids if flag else None)
    out = []
    for (_, ticker), req, con in zip(norm, reqs, cons):
        engine.stats["generated_tokens"] += req.generated
        p = con.probs
        label = LABELS[int(p.argmax())] if p is not None else "neutral"
        try:
            obj = json.loads(answer_prefix(ticker) + req.text)
            out.append(SentimentAnswer.model_validate(obj).model_dump())
        except Exception:  # cannot happen with the constraint; an answer must come back regardless
            engine.stats["fallbacks"] = engine.stats.get("fallbacks", 0) + 1
            out.append(make_answer(ticker, label, float(p[2] - p[0]) if p is not None else 0.0))
    return out
