"""Entity-level metrics on hand-computed cases, the items they are computed over, the v1 stopgap ticker, and
entity_eval (items asked by name, metrics per system in entity.json) on real FinEntity data and real engines."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.data.records import Record, Target
from tickerpulse.evaluate.entity import (EntityItem, asks_by_name, entity_eval, entity_eval_items, entity_intervals,
                                         entity_items, entity_metrics, student_ticker)
from tickerpulse.task.contract import DEFAULT_PROMPT

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
    assert (m["told_apart"], m["told_apart_paragraphs"]) == (1 / 2, 1)  # P1's predictions differ (positive, neutral), P3's are all negative
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


def test_intervals_resample_whole_paragraphs():
    paragraphs, _, gold, pred = (list(col) for col in zip(*CASE))
    iv = entity_intervals(paragraphs, gold, pred)
    m = metrics(CASE)
    for key in ("accuracy", "conflict_accuracy", "told_apart"):
        assert iv[key][0] <= m[key] <= iv[key][1]
    # conflicting paragraphs P1 (told apart: pos, pos, neu) and P3 (not: neg, neg) -> 1/2; resamples that draw
    # only one of them give 0 or 1
    assert 0.0 <= iv["told_apart"][0] < m["told_apart"] < iv["told_apart"][1] <= 1.0
    # all right: no width; no conflicting paragraph: the conflict intervals are None
    assert entity_intervals(paragraphs, gold, gold)["accuracy"] == [1.0, 1.0]
    flat = entity_intervals(["P1", "P1", "P2"], ["neutral"] * 3, ["neutral", "positive", "neutral"])
    assert flat["conflict_accuracy"] is None and flat["told_apart"] is None
    assert flat["accuracy"][0] < 2 / 3 < flat["accuracy"][1]


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


# ------------------------------------------------------------------------------------------------ entity_eval
def test_eval_items_ask_by_name_under_v2_and_the_symbol_under_v1():
    recs = [_rec("p1", [("Johnson & Johnson", "positive", None), ("Tesla Inc", "negative", "TSLA"),
                        ("Brent crude", "neutral", None)])]
    ents, _ = entity_items(recs)
    v2 = entity_eval_items(ents, "sentiment-v2")
    assert [(it.target, it.ticker, it.gold_label) for it in v2] == [
        ("Johnson & Johnson", "JNJ", "positive"),  # no symbol in the data: resolved from the name
        ("Tesla Inc", "TSLA", "negative"), ("Brent crude", None, "neutral")]
    assert all("Target: " + it.target in it.messages[-1]["content"] for it in v2)
    assert [it.id for it in v2] == ["p1#0", "p1#1", "p1#2"] and v2[0].text == "text of p1"
    v1 = entity_eval_items(ents, "sentiment-v1")  # cannot show a name: the stopgap symbol or the market
    assert [it.target for it in v1] == [None, "TSLA", None]
    assert asks_by_name("sentiment-v2") and not asks_by_name("sentiment-v1")


def test_entity_eval_writes_metrics_per_system_on_real_finentity(shared_data, tmp_path):
    from tickerpulse.data.finentity import split_paragraphs
    from tickerpulse.data.readers import read_records
    from tickerpulse.evaluate.baselines import TfidfLR, baseline_labelers

    splits = split_paragraphs(read_records(shared_data / "finentity" / "finentity.jsonl", "finentity"), seed=0)
    train, _ = entity_items(splits["train"])
    tfidf = TfidfLR(0).fit([it.text for it in train], [it.gold for it in train])
    labelers = baseline_labelers([it.gold for it in train], tfidf)
    test = splits["test"][:40]
    got = entity_eval(labelers, test, tmp_path, data_info={"split": "test"})
    written = json.loads((tmp_path / "entity.json").read_text())
    assert written == json.loads(json.dumps(got))
    ents, ambiguous = entity_items(test)
    assert (got["targets"], got["ambiguous_names_left_out"]) == (len(ents), ambiguous)
    assert list(got["systems"]) == ["majority class", "VADER", "TF-IDF + LR"]
    for name, m in got["systems"].items():
        labels = [row[name] for row in got["items"]]
        paragraphs, gold = [e.paragraph for e in ents], [e.gold for e in ents]
        assert m == {**entity_metrics(paragraphs, [e.target for e in ents], gold, labels),
                     "ci95": entity_intervals(paragraphs, gold, labels), "prompt_version": DEFAULT_PROMPT,
                     "asked_as": m["asked_as"]}
        for key in ("accuracy", "conflict_accuracy", "told_apart"):
            lo, hi = m["ci95"][key]
            assert lo <= m[key] <= hi
        assert sum(m["asked_as"].values()) == len(ents) and m["conflict_paragraphs"] > 0
    # a target-blind system gives every target of a paragraph the same label: it tells nothing apart
    assert got["systems"]["VADER"]["told_apart"] == 0.0 and got["systems"]["majority class"]["told_apart"] == 0.0
    with pytest.raises(ValueError, match="no entity targets"):
        entity_eval(labelers, [], tmp_path / "none")
    # a system measured earlier on the same items (the model a run replaces) joins the result; on other items not
    first = entity_eval(labelers[:1], test, tmp_path / "first")
    joined = entity_eval(labelers[1:], test, tmp_path / "joined", earlier=first)
    assert joined == json.loads((tmp_path / "joined" / "entity.json").read_text())
    assert list(joined["systems"]) == ["VADER", "TF-IDF + LR", "majority class"]
    assert joined["systems"]["majority class"] == got["systems"]["majority class"]
    assert [r["majority class"] for r in joined["items"]] == [r["majority class"] for r in got["items"]]
    other = entity_eval(labelers[1:], splits["test"][40:60], tmp_path / "other", earlier=first)
    assert "majority class" not in other["systems"]


@pytest.mark.timeout(900)
def test_entity_eval_asks_a_v1_engine_by_symbol_and_a_v2_engine_by_name(smollm2_path, tmp_path):
    from tickerpulse.serve.engine import SentimentEngine
    from tickerpulse.serve.labeler import EngineLabeler

    recs = [_rec("p1", [("Johnson & Johnson", "positive", None), ("Tesla Inc", "negative", "TSLA")]),
            _rec("p2", [("Brent crude", "neutral", None)])]
    v2 = EngineLabeler(SentimentEngine(str(smollm2_path), prompt_version="sentiment-v2", threads=1), name="v2")
    v1 = EngineLabeler(SentimentEngine(str(smollm2_path), prompt_version="sentiment-v1", threads=1), name="v1")
    got = entity_eval([v2, v1], recs, tmp_path)
    assert got["systems"]["v2"]["prompt_version"] == "sentiment-v2"
    assert got["systems"]["v2"]["asked_as"] == {"name": 3}  # Tesla Inc too, though its symbol is known
    assert got["systems"]["v1"]["prompt_version"] == "sentiment-v1"
    assert got["systems"]["v1"]["asked_as"] == {"none (market)": 2, "symbol": 1}
    assert all(row["v1"] in ("negative", "neutral", "positive") for row in got["items"])
