"""Injection families: train and eval vocabularies disjoint, the asked label never the clean one, seeded
determinism, augmentation over every family; the flip-rate computation."""

from __future__ import annotations

import random

import pytest

from tickerpulse.evaluate.injection import (FAMILIES, augment, flip_interval, flip_summary, flipped, inject, markers,
                                            obeyed_rate, phrasing)
from tickerpulse.task.contract import LABELS


def _sample(family: str, split: str, n: int = 600) -> list[str]:
    rng = random.Random(f"test:{family}:{split}")
    return [phrasing(family, split, rng, rng.choice(LABELS), rng.choice([None, "MSFT", "Johnson & Johnson"]))
            for _ in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_train_and_eval_phrasings_are_disjoint(family: str) -> None:
    train, ev = _sample(family, "train"), _sample(family, "eval")
    assert len(set(train)) > 20 and len(set(ev)) > 10  # broad, combinatorial
    assert not set(train) & set(ev)
    # stronger: every phrasing carries a marker of its own split and none of the other split's (of any
    # family's), so no eval phrasing can come out of the train generator and vice versa
    all_train = [p.lower() for f in FAMILIES for p in markers(f, "train")]
    all_eval = [p.lower() for f in FAMILIES for p in markers(f, "eval")]
    own_train, own_eval = [p.lower() for p in markers(family, "train")], [p.lower() for p in markers(family, "eval")]
    for text in train:
        low = text.lower()
        assert any(p in low for p in own_train), text
        assert not any(p in low for p in all_eval), text
    for text in ev:
        low = text.lower()
        assert any(p in low for p in own_eval), text
        assert not any(p in low for p in all_train), text


@pytest.mark.parametrize("family", FAMILIES)
def test_inject_asks_for_another_label_deterministically(family: str) -> None:
    seen = set()
    for i in range(30):
        for lab in LABELS:
            text, asked = inject("Shares rise", lab, i, family, "MSFT")
            assert asked != lab and asked in LABELS and asked in text
            assert text.startswith("Shares rise ") or text.startswith("Shares rise\n")
            assert (text, asked) == inject("Shares rise", lab, i, family, "MSFT")
            seen.add(text)
    assert len(seen) > 10
    # an invalid or missing clean answer: any label may be asked
    assert inject("x", None, 0, family)[1] in LABELS


def test_phrasing_refuses_unknown_family_split_and_label() -> None:
    rng = random.Random(0)
    for args in (("nope", "eval", "positive"), ("plea", "test", "positive"), ("plea", "eval", "bullish")):
        with pytest.raises(ValueError):
            phrasing(args[0], args[1], rng, args[2])  # type: ignore[arg-type]


def test_augment_keeps_the_clean_label_spreads_over_families_and_uses_training_phrasings() -> None:
    from tickerpulse.data.records import Record

    rows = [Record(f"r{i}", f"post {i}", ("negative", "neutral", "positive")[i % 3], "records", dataset="x",
                   tickers=["AAPL"] if i % 2 else []) for i in range(100)]
    aug = augment(rows, 0.2, seed=1)
    assert len(aug) == 20 and aug == augment(rows, 0.2, seed=1) and aug != augment(rows, 0.2, seed=2)
    by_id = {r.id: r for r in rows}
    eval_pieces = [p.lower() for f in FAMILIES for p in markers(f, "eval")]
    families = []
    for a in aug:
        base, _, family = a.id.partition(":inj-")
        families.append(family)
        clean = by_id[base]
        assert a.label == clean.label and a.text.startswith(clean.text) and len(a.text) > len(clean.text)
        injection = a.text[len(clean.text):]
        assert not any(p in injection.lower() for p in eval_pieces)  # never the evaluation's phrasings
        assert clean.label not in injection and any(lab in injection for lab in LABELS)  # asks for another label
    assert sorted(set(families)) == sorted(FAMILIES) and all(families.count(f) == 4 for f in FAMILIES)
    assert augment(rows, 0.0, 1) == [] and augment([], 0.5, 1) == []


def test_flip_and_obeyed_rates() -> None:
    flips = flipped(["positive", "neutral", "negative", "neutral"], ["positive", "positive", "negative", "invalid"])
    assert flips == [False, True, False, True]
    with pytest.raises(ValueError):
        flipped(["positive"], [])
    # one table gives the count, the rate over (post, family) cells and the interval over posts
    table = [[f, False] for f in flips]  # 4 posts x 2 families
    s = flip_summary(table)
    assert s["flips"] == 2 and s["flip_rate"] == 0.25 and s["ci95"] == flip_interval(table)
    assert flip_summary([]) == {"flips": 0, "flip_rate": 0.0, "ci95": None}
    assert obeyed_rate(["positive", "neutral"], ["positive", "negative"]) == 0.5


def test_flip_interval_resamples_posts() -> None:
    # 4 flips in 150 posts (2.7%): the 95% interval reaches past 5% (the card's bar is inside one run's noise)
    one = [[k < 4] for k in range(150)]
    lo, hi = flip_interval(one)
    assert 0.0 <= lo < 4 / 150 < 0.05 < hi < 0.08
    # one post flipping in all of 5 families moves the overall rate as one unit: a wider interval than 5 posts
    # flipping once each (the same 5 flips in 750)
    clustered = [[True] * 5] + [[False] * 5] * 149
    spread = [[f == k for f in range(5)] if k < 5 else [False] * 5 for k in range(150)]
    a, b = flip_interval(clustered), flip_interval(spread)
    assert a[1] - a[0] > b[1] - b[0]
    assert flip_interval([]) is None and flip_interval([[False]] * 10) == [0.0, 0.0]
