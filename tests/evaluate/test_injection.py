"""Injection texts and the flip-rate computation."""

from __future__ import annotations

import pytest

from tickerpulse.evaluate.injection import flip_rate, inject, obeyed_rate


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


def test_augment_keeps_the_clean_label_and_uses_training_phrasings() -> None:
    from tickerpulse.data.records import Record
    from tickerpulse.evaluate.injection import TEMPLATES, augment

    rows = [Record(f"r{i}", f"post {i}", ("negative", "neutral", "positive")[i % 3], "records", dataset="x") for i in range(50)]
    aug = augment(rows, 0.2, seed=1)
    assert len(aug) == 10 and aug == augment(rows, 0.2, seed=1)
    by_id = {r.id: r for r in rows}
    for a in aug:
        clean = by_id[a.id.removesuffix(":inj")]
        assert a.label == clean.label and a.text.startswith(clean.text + " ")
        assert not any(t.split("{")[0] in a.text for t in TEMPLATES)  # never the evaluation's phrasings
    assert augment(rows, 0.0, 1) == []
