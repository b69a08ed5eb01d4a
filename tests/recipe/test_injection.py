"""Injection texts and the flip-rate computation."""

from __future__ import annotations

import pytest

from tickerpulse.recipe.injection import flip_rate, inject, obeyed_rate


def test_flip_rate() -> None:
    assert flip_rate(["positive", "neutral", "negative", "neutral"], ["positive", "positive", "negative", "invalid"]) == 0.5
    assert flip_rate([], []) == 0.0
    with pytest.raises(ValueError):
        flip_rate(["positive"], [])


def test_inject_asks_for_another_label_deterministically() -> None:
    for i in range(10):
        for lab in ("negative", "neutral", "positive"):
            text, asked = inject("Shares rise", lab, i)
            assert asked != lab and asked in text and text.startswith("Shares rise ")
            assert (text, asked) == inject("Shares rise", lab, i)
    assert obeyed_rate(["positive", "neutral"], ["positive", "negative"]) == 0.5
