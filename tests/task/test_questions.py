"""The one question rule: which target (and its ticker) a row asks about, and with which gold."""

from __future__ import annotations

import pytest

from tickerpulse.task.questions import clean_symbol, questions_of, symbols_of

# (text, tickers, target_gold, limit) -> [(id, target, ticker, label, score)]
CASES = [
    # no symbol anywhere: one question about the market, with the row's gold
    ("Markets drift", None, None, 1, [("r", None, None, "neutral", None)]),
    # extracted symbols, in order of first mention; the first one by default, each with limit=None
    ("$MSFT and $aapl beat", None, None, 1, [("r", "MSFT", "MSFT", "neutral", None)]),
    ("$MSFT and $aapl beat", None, None, None,
     [("r:MSFT", "MSFT", "MSFT", "neutral", None), ("r:AAPL", "AAPL", "AAPL", "neutral", None)]),
    # the row's own symbols win over extraction; invalid ones are dropped
    ("$MSFT and $aapl beat", ["$aapl", "Apple Inc", "msft"], None, None,
     [("r:AAPL", "AAPL", "AAPL", "neutral", None), ("r:MSFT", "MSFT", "MSFT", "neutral", None)]),
    # per-target gold (FiQA): the annotated targets are the questions, each with its own gold
    ("$GRPN might sell off ahead of $P earnings", ["P", "GRPN"], {"P": ("negative", -0.202)}, 1, [("r", "P", "P", "negative", -0.202)]),
    ("$GRPN might sell off ahead of $P earnings", ["P", "GRPN"], {"P": ("negative", -0.202)}, None,
     [("r", "P", "P", "negative", -0.202)]),
    # name targets (FiQA headlines, FinEntity) are asked by name, each with its own gold; the ticker is the
    # company table's symbol or None, even when the text has a cashtag
    ("TalkTalk and Tesco slide, $FTSE flat", None, {"TalkTalk": ("negative", -0.3), "Tesco": ("positive", 0.3)}, None,
     [("r:TalkTalk", "TalkTalk", None, "negative", -0.3), ("r:Tesco", "Tesco", None, "positive", 0.3)]),
    ("TalkTalk and Tesco slide, $FTSE flat", None, {"TalkTalk": ("negative", -0.3), "Tesco": ("positive", 0.3)}, 1,
     [("r", "TalkTalk", None, "negative", -0.3)]),
    ("$AMD up, Intel down", None, {"AMD": ("positive", 0.5), "Intel": ("negative", -0.4)}, None,
     [("r:AMD", "AMD", "AMD", "positive", 0.5), ("r:Intel", "Intel", "INTC", "negative", -0.4)]),
    ("Microsoft beats", None, {"Microsoft": ("positive", 0.6)}, 1, [("r", "Microsoft", "MSFT", "positive", 0.6)]),
    # label-only targets (FinEntity): the label, no score
    ("Boeing rose; Refinitiv data showed", None, {"Boeing": ("positive", None), "Refinitiv": ("neutral", None)}, None,
     [("r:Boeing", "Boeing", "BA", "positive", None), ("r:Refinitiv", "Refinitiv", None, "neutral", None)]),
]


@pytest.mark.parametrize("text,tickers,targets,limit,expected", CASES)
def test_questions_of(text, tickers, targets, limit, expected):
    qs = questions_of(text, id="r", tickers=tickers, label="neutral", target_gold=targets, limit=limit, group="g")
    assert [(q.id, q.target, q.ticker, q.label, q.score) for q in qs] == expected
    assert all(q.text == text and q.group == "g" for q in qs)
    assert all(q.to_dict()["target"] == q.target and q.to_dict()["ticker"] == q.ticker for q in qs)


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
