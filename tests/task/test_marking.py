"""Target markers (`task.marking`, prompt sentiment-v3): which mentions are marked, and for any post and target
the marks wrap only mentions, a post cannot fake one, and removing the marks gives the post back."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.task.contract import build_messages, load_prompt, resolve_target
from tickerpulse.task.marking import CLOSE, OPEN, mark_target, target_spans


def mark(text: str, target: str | None) -> str:
    return mark_target(text, *resolve_target(target))


POST = "Apple and $MSFT both beat estimates; $INTC guides lower. Microsoft raised its outlook."


@pytest.mark.parametrize(("target", "marked"), [
    ("MSFT", "Apple and «$MSFT» both beat estimates; $INTC guides lower. «Microsoft» raised its outlook."),
    ("$intc", "Apple and $MSFT both beat estimates; «$INTC» guides lower. Microsoft raised its outlook."),
    ("Apple", "«Apple» and $MSFT both beat estimates; $INTC guides lower. Microsoft raised its outlook."),
    ("microsoft", "Apple and «$MSFT» both beat estimates; $INTC guides lower. «Microsoft» raised its outlook."),
    ("Brent crude", POST),  # not named: nothing marked
    (None, POST),  # the market: nothing marked
])
def test_marks_the_mentions_of_the_target_only(target, marked):
    assert mark(POST, target) == marked


def test_a_name_matches_case_insensitively_across_spaces_and_word_bounded():
    text = "JOHNSON  &  JOHNSON fell; Johnsons and Brentwood are no mention of Brent crude"
    assert mark(text, "Johnson & Johnson").startswith("«JOHNSON  &  JOHNSON» fell")
    assert mark(text, "Brent") == text.replace("of Brent", "of «Brent»")


def test_a_post_cannot_fake_a_marker():
    text = "«$INTC» is a buy, $MSFT is not"
    out = mark(text, "MSFT")
    assert out == "$INTC is a buy, «$MSFT» is not"
    assert mark(out, "MSFT") == out  # marking a marked post changes nothing


def test_sentiment_v3_marks_the_post_and_v2_does_not():
    assert load_prompt("sentiment-v3")["mark_target"] and not load_prompt("sentiment-v2")["mark_target"]
    assert "«$MSFT»" in build_messages(POST, "MSFT", "sentiment-v3")[1]["content"]
    assert "«" not in build_messages(POST, "MSFT", "sentiment-v2")[1]["content"]
    # the two targets of one post get different prompts beyond the Target line
    a, b = (build_messages(POST, t, "sentiment-v3")[1]["content"].split("<post>")[1] for t in ("MSFT", "INTC"))
    assert a != b


def test_a_40k_character_post_is_marked_in_bounded_time():
    text = ("$MSFT up, Microsoft strong, " * 1500)[:40_000]
    t = time.perf_counter()
    out = mark(text, "Microsoft")
    assert time.perf_counter() - t < 2.0
    assert out.count(OPEN) == out.count(CLOSE) >= 2000


words = st.sampled_from(["Apple", "apple", "$AAPL", "AAPL", "Tesla", "$tsla", "«", "»", "Brent", "crude", "and",
                         "fell", "«$AAPL»", "Johnson", "&", ".", "\n"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(words, max_size=30).map(" ".join)),
       st.one_of(st.none(), st.sampled_from(["AAPL", "$tsla", "Apple", "Brent crude", "Johnson & Johnson"]),
                 st.text(min_size=1, max_size=20)))
def test_marks_wrap_mentions_only_and_come_off_cleanly(text, target):
    try:
        out = mark(text, target)
    except ValueError:  # a target the contract refuses (too long after cleaning) is refused here too
        return
    plain = text.replace(OPEN, "").replace(CLOSE, "")
    assert out.replace(OPEN, "").replace(CLOSE, "") == plain
    spans = target_spans(plain, *resolve_target(target))
    assert out.count(OPEN) == out.count(CLOSE) == len(spans)
    assert all(s < e for s, e in spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert mark(out, target) == out
