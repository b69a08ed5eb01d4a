"""Reasoning mode of the sentiment engine: the label pass and a schema-constrained continuation in one decode.

The prompt ends with `answer_prefix(target)` (the target and its symbol already written), so the first sampled token is the label: it is restricted to
the three label tokens and taken greedily (the fast mode's argmax, so both modes always agree). From then on
the output is constrained to the answer schema specialised to that label: the score's range follows the label
(positive > 0, negative < 0, neutral within +-0.5) and the reasoning is a JSON string of bounded length.
The constraint is the llguidance grammar of that specialised schema (`tickerpulse.serve.grammar`, `tickerpulse.serve.constraint`), primed
with the answer prefix the prompt already holds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tickerpulse.task.contract import LABELS, MAX_REASONING_CHARS, NEUTRAL_BAND, SentimentAnswer, answer_prefix
from tickerpulse.task.calibration import LabelCalibration
from tickerpulse.serve.decoding import GenRequest, decode
from tickerpulse.serve.constraint import GrammarConstraint
from tickerpulse.serve.grammar import compile_schema, runtime_grammar_tokenizer

_SCORE = {
    "positive": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "negative": {"type": "number", "minimum": -1, "exclusiveMaximum": 0},
    "neutral": {"type": "number", "minimum": -NEUTRAL_BAND, "maximum": NEUTRAL_BAND},
}


# '", "score": -0.01, "reasoning": ""}' plus slack: the closing text the budget must always leave room for.
_FIXED_CHARS = 40


def answer_schema(label: str, max_chars: int = MAX_REASONING_CHARS) -> dict[str, Any]:
    """The answer schema with the label fixed and the score range of the label. Target and ticker are left
    open: the prompt already holds them (primed into the matcher), so three grammars serve every target."""
    props = {"target": {"type": ["string", "null"]}, "ticker": {"type": ["string", "null"]},
             "sentiment": {"const": label}, "score": _SCORE[label], "reasoning": {"type": "string", "maxLength": max_chars}}
    return {"type": "object", "properties": props, "required": ["ticker", "sentiment", "score", "reasoning"],
            "additionalProperties": False}


class SentimentConstraint:
    """First token: one of the label tokens (probabilities recorded); then the label's answer schema."""

    def __init__(self, target: str | None, label_ids: list[int], tokenizer: Any, calibration: LabelCalibration | None = None,
                 max_tokens: int = 48, probs: Any = None, prefix: str | None = None) -> None:
        self.target, self.label_ids, self.tokenizer = target, label_ids, tokenizer
        self.prefix = answer_prefix(target) if prefix is None else prefix  # the answer text the prompt ends with
        self.calibration, self.max_tokens = calibration or LabelCalibration(), max_tokens
        self.reason_tokens = 0  # tokens sampled inside the reasoning string
        self.inner: GrammarConstraint | None = None
        # the label probabilities of the engine's label pass (fast mode's), when given: the label is then fast
        # mode's by construction; otherwise they are read from the first decode step's logits
        self.fixed = probs is not None
        self.probs: Any = None if probs is None else np.asarray(probs, dtype=np.float64)

    def observe(self, logits: Any) -> None:
        if self.inner is None and not self.fixed:
            self.probs = self.calibration.probs(np.asarray(logits[self.label_ids], dtype=np.float64))

    def mask(self, budget: int) -> Any:
        if self.inner is not None:
            return self.inner.mask(self._budget(budget))
        m = np.zeros(self.tokenizer.vocab_size, dtype=bool)
        if self.probs is not None:  # the calibrated label (what fast mode answers), not the raw argmax
            m[self.label_ids[int(np.argmax(self.probs))]] = True
        else:
            m[self.label_ids] = True
        return m

    def _budget(self, budget: int) -> int:
        if self.inner is not None and self.inner.in_string():  # inside the reasoning: its own budget, plus '"}'
            return min(budget, self.max_tokens - self.reason_tokens + 2)
        return budget

    def accept(self, token_id: int, budget_after: int | None = None) -> bool:
        if self.inner is not None:
            in_string = self.inner.in_string()
            ok = self.inner.accept(token_id, None if budget_after is None else self._budget(budget_after + 1) - 1)
            self.reason_tokens += ok and in_string
            return ok
        label = LABELS[self.label_ids.index(token_id)]
        grammar = compile_schema(answer_schema(label), self.tokenizer)
        self.inner = GrammarConstraint(grammar, self.max_tokens + _FIXED_CHARS)
        self.inner.prefill(self.prefix + self.tokenizer.decode_str([token_id]))
        return True

    def forced_ids(self) -> list[int]:
        return self.inner.forced_ids() if self.inner is not None else []

    def close(self) -> list[int]:
        return self.inner.close() if self.inner is not None else []

    def done(self) -> bool:
        return self.inner is not None and self.inner.done()

    def complete(self) -> bool:
        return self.inner is not None and self.inner.complete()


def reason(engine: Any, adapter: str | None, norm: list[tuple[str, str | None]], encoded: list[tuple[list[int], bool]],
           max_tokens: int, probs: list[Any] | None = None) -> list[dict[str, Any]]:
    """Answers with generated score and reasoning for (text, target) items already encoded by the engine; `probs`
    (the engine's label pass) fixes each label to fast mode's."""
    from tickerpulse.task.answers import make_answer

    rt = engine.rt
    tokenizer = runtime_grammar_tokenizer(rt)
    calib = engine._calib.get(adapter, LabelCalibration())
    reqs, cons = [], []
    version = engine.prompt_version
    for k, ((_, target), (ids, uses_prefix)) in enumerate(zip(norm, encoded)):
        con = SentimentConstraint(target, engine._label_ids, tokenizer, calib, max(1, max_tokens),
                                  probs=None if probs is None else probs[k], prefix=answer_prefix(target, version))
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
    for (_, target), req, con in zip(norm, reqs, cons):
        engine.stats["generated_tokens"] += req.generated
        p = con.probs
        label = LABELS[int(p.argmax())] if p is not None else "neutral"
        try:
            obj = json.loads(con.prefix + req.text)
            ans = SentimentAnswer.model_validate(obj)
            # the target and symbol are the asked ones (a sentiment-v1 model does not write the target)
            out.append(make_answer(target, ans.sentiment, ans.score, ans.reasoning))
        except Exception:  # cannot happen with the constraint; an answer must come back regardless
            engine.stats["fallbacks"] = engine.stats.get("fallbacks", 0) + 1
            out.append(make_answer(target, label, float(p[2] - p[0]) if p is not None else 0.0))
    return out
