"""The one question rule: which ticker a row asks about, and with which gold."""

from __future__ import annotations

import pytest

from tickerpulse.task.questions import clean_symbol, questions_of, symbols_of

# (text, tickers, target_scores, limit) -> [(id, ticker, label, score)]
CASES = [
    # no symbol anywhere: one question about the market, with the row's gold
    ("Markets drift", None, None, 1, [("r", None, "neutral", None)]),
    # extracted symbols, in order of first mention; the first one by default, each with limit=None
    ("$MSFT and $aapl beat", None, None, 1, [("r", "MSFT", "neutral", None)]),
    ("$MSFT and $aapl beat", None, None, None, [("r:MSFT", "MSFT", "neutral", None), ("r:AAPL", "AAPL", "neutral", None)]),
    # the row's own symbols win over extraction; invalid ones are dropped
    ("$MSFT and $aapl beat", ["$aapl", "Apple Inc", "msft"], None, None,
     [("r:AAPL", "AAPL", "neutral", None), ("r:MSFT", "MSFT", "neutral", None)]),
    # per-target gold (FiQA): the annotated targets are the questions, each with its own gold
    ("$GRPN might sell off ahead of $P earnings", ["P", "GRPN"], {"P": -0.202}, 1, [("r", "P", "negative", -0.202)]),
    ("$GRPN might sell off ahead of $P earnings", ["P", "GRPN"], {"P": -0.202}, None, [("r", "P", "negative", -0.202)]),
    # company-name targets (no symbol) are one question about None, even when the text has a cashtag
    ("TalkTalk and Tesco slide, $FTSE flat", None, {None: 0.3}, 1, [("r", None, "positive", 0.3)]),
    ("$AMD up, Intel down", None, {"AMD": 0.5, None: -0.4}, None,
     [("r:AMD", "AMD", "positive", 0.5), ("r:None", None, "negative", -0.4)]),
]


@pytest.mark.parametrize("text,tickers,targets,limit,expected", CASES)
def test_questions_of(text, tickers, targets, limit, expected):
    qs = questions_of(text, id="r", tickers=tickers, label="neutral", target_scores=targets, limit=limit, group="g")
    assert [(q.id, q.ticker, q.label, q.score) for q in qs] == expected
    assert all(q.text == text and q.group == "g" for q in qs)


def test_questions_carry_every_symbol_of_the_text():
    [q] = questions_of("$MSFT and $aapl beat", id="r")
    assert q.tickers == ("MSFT", "AAPL") and q.to_dict()["tickers"] == ["MSFT", "AAPL"]


@pytest.mark.parametrize("value,symbol", [("$aapl", "AAPL"), (" BRK.B ", "BRK.B"), ("Royal Mail", None), (5, None),
                                          ("", None)])
def test_clean_symbol(value, symbol):
    assert clean_symbol(value) == symbol


def test_symbols_of_dedupes_in_order():
    assert symbols_of("$TSLA $tsla then $F") == ["TSLA", "F"]
    assert symbols_of("no symbols here") == []
