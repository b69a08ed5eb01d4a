"""Entity-level metrics on hand-computed cases, the items they are computed over, and the student's ticker."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.data.records import Record, Target
from tickerpulse.evaluate.entity import EntityItem, entity_items, entity_metrics, student_ticker

# paragraph, target, gold, predicted
CASE = [
    ("P1", "A", "positive", "positive"),
    ("P1", "B", "negative", "positive"),
    ("P1", "C", "neutral", "neutral"),
    ("P2", "D", "positive", "positive"),
    ("P2", "E", "positive", "negative"),
    ("P3", "F", "negative", "negative"),
    ("P3", "G", "positive", "negative"),
    ("P4", "H", "neutral", "invalid"),
]


def metrics(rows):
    return entity_metrics(*(list(col) for col in zip(*rows)))


def test_hand_computed_case():
    m = metrics(CASE)
    assert (m["targets"], m["paragraphs"]) == (8, 4)
    assert m["accuracy"] == 4 / 8  # A C D F right
    # P1 and P3 have targets with different gold labels; of their 5 targets A, C, F are right
    assert (m["conflict_paragraphs"], m["conflict_targets"]) == (2, 5)
    assert m["conflict_accuracy"] == 3 / 5
    assert m["told_apart"] == 1 / 2  # P1's predictions differ (positive, neutral), P3's are all negative
    # pairs with different gold: P1 (A,B) (A,C) (B,C), P3 (F,G); predicted apart: (A,C) (B,C)
    assert (m["pairs"], m["pairs_told_apart"]) == (4, 2 / 4)
    # per class F1: positive P 2/3 R 2/4 -> 4/7; negative P 1/3 R 1/2 -> 2/5; neutral P 1 R 1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((4 / 7 + 2 / 5 + 2 / 3) / 3)


def test_copying_the_paragraph_label_tells_nothing_apart():
    rows = [("P1", "A", "positive", "neutral"), ("P1", "B", "negative", "neutral"), ("P1", "C", "neutral", "neutral"),
            ("P2", "D", "negative", "negative"), ("P2", "E", "positive", "negative")]
    m = metrics(rows)
    assert (m["accuracy"], m["conflict_accuracy"], m["told_apart"], m["pairs_told_apart"]) == (2 / 5, 2 / 5, 0.0, 0.0)
    assert m["pairs"] == 3 + 1


def test_without_conflicting_paragraphs_the_conflict_rates_are_none():
    m = metrics([("P1", "A", "positive", "positive"), ("P1", "B", "positive", "negative")])
    assert m["accuracy"] == 0.5
    assert m["conflict_paragraphs"] == 0
    assert (m["conflict_accuracy"], m["told_apart"], m["pairs_told_apart"]) == (None, None, None)
    empty = entity_metrics([], [], [], [])
    assert (empty["targets"], empty["accuracy"], empty["told_apart"]) == (0, 0.0, None)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="1 paragraphs, 1 targets, 1 gold labels, 0 predictions"):
        entity_metrics(["P1"], ["A"], ["positive"], [])
    with pytest.raises(ValueError, match="occurs twice"):
        metrics([("P1", "A", "positive", "positive"), ("P1", "A", "positive", "negative")])


_LABEL = st.sampled_from(["negative", "neutral", "positive"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), _LABEL, _LABEL | st.just("invalid")), max_size=30))
def test_pair_counting_equals_brute_force(rows):
    items = [(f"P{p}", f"T{i}", g, q) for i, (p, g, q) in enumerate(rows)]
    m = entity_metrics(*(list(col) for col in zip(*items, strict=True))) if items else entity_metrics([], [], [], [])
    pairs = [(a, b) for a, b in combinations(items, 2) if a[0] == b[0] and a[2] != b[2]]
    apart = [(a, b) for a, b in pairs if a[3] != b[3]]
    assert m["pairs"] == len(pairs)
    assert m["pairs_told_apart"] == (len(apart) / len(pairs) if pairs else None)


def _rec(id: str, targets: list[tuple[str, str, str | None]]) -> Record:
    scores = {"negative": -0.7, "neutral": 0.0, "positive": 0.7}
    return Record(id=id, text=f"text of {id}", label="neutral", source="finentity",
                  targets=[Target(target=n, score=scores[lab], ticker=sym, label=lab) for n, lab, sym in targets])


def test_items_are_distinct_names_per_paragraph_without_ambiguous_ones():
    recs = [_rec("p1", [("Tesla Inc", "positive", "TSLA"), ("Ford", "negative", None),
                        ("Tesla Inc", "positive", None)]),
            _rec("p2", [("Apple", "positive", None), ("Apple", "negative", None), ("Nvidia", "neutral", None)]),
            _rec("p1", [("Tesla Inc", "positive", "TSLA")])]  # the same paragraph again: nothing added
    items, ambiguous = entity_items(recs)
    assert [(it.paragraph, it.target, it.ticker, it.gold) for it in items] == [
        ("p1", "Tesla Inc", "TSLA", "positive"), ("p1", "Ford", None, "negative"), ("p2", "Nvidia", None, "neutral")]
    assert ambiguous == 1 and items[0].text == "text of p1"


@pytest.mark.parametrize("target,ticker,asked", [
    ("Johnson & Johnson", "JNJ", "JNJ"),  # a symbol from the data wins
    ("Tesla", None, "TESLA"),
    ("Amazon.com", None, "AMAZON.COM"),  # the schema's pattern allows a dotted suffix
    ("Johnson & Johnson", None, None),
    ("Macy's", None, None),
    ("3M", None, None),
    ("Brent crude", None, None),
])
def test_student_ticker(target, ticker, asked):
    assert student_ticker(EntityItem("p", "t", target, ticker, "neutral")) == asked
