"""Reasoning mode of the sentiment engine (constrained JSON decoding). Temporary: fast label + empty reasoning
until the constrained decoder lands."""

from __future__ import annotations

from typing import Any


def reason(engine: Any, adapter: str | None, norm: list, encoded: list, max_tokens: int) -> list[dict[str, Any]]:
    with engine.rt.use(adapter):
        probs = engine._label_pass(adapter, encoded)
    return [engine._fast_answer(k, p) for (_, k), p in zip(norm, probs)]
