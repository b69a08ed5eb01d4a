"""Metric code against cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from tickerpulse.evaluate import metrics as M
from tickerpulse.task import metrics as T
from tickerpulse.task.metrics import INVALID

GOOD = '{"ticker": "AAPL", "sentiment": "positive", "score": 0.8, "reasoning": "beat"}'


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


# ------------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "text, json_valid, json_found, schema_valid, label, lenient",
    [
        (GOOD, True, True, True, "positive", "positive"),
        ("  " + GOOD + "\n", True, True, True, "positive", "positive"),
        # prose around the object: extractable and schema-valid, but not strict JSON
        ("Sure! " + GOOD + " Hope that helps.", False, True, True, "positive", "positive"),
        # valid JSON, but score contradicts the label -> schema-invalid, the strict label is invalid
        ('{"ticker": null, "sentiment": "positive", "score": -0.5, "reasoning": ""}', True, True, False, INVALID, "positive"),
        # a label outside the closed set
        ('{"ticker": null, "sentiment": "bullish", "score": 0.5, "reasoning": ""}', True, True, False, INVALID, INVALID),
        ("The sentiment is positive.", False, False, False, INVALID, INVALID),
        ("", False, False, False, INVALID, INVALID),
        ('["positive"]', False, False, False, INVALID, INVALID),
        ('{"ticker": "AAPL", "sentiment": "positive", "score": 0.8, "reasoning": "cut off', False, False, False, INVALID, INVALID),
    ],
)
def test_parse_prediction(text, json_valid, json_found, schema_valid, label, lenient):
    p = M.parse_prediction(text)
    assert (p.json_valid, p.json_found, p.schema_valid, p.label, p.label_lenient) == (
        json_valid, json_found, schema_valid, label, lenient)
    assert (p.error is None) == schema_valid
    if schema_valid:
        assert p.score == 0.8 and p.ticker == "AAPL"
    else:
        assert p.score is None and p.ticker is None


# ----------------------------------------------------------------------------------------- classification
def test_unparsable_answers_count_as_wrong_not_skipped():
    gold = ["positive", "negative", "neutral", "neutral"]
    texts = [
        GOOD,  # positive: right
        "I think it's bad news",  # unparsable -> invalid -> wrong
        '{"ticker": null, "sentiment": "neutral", "score": 0.0, "reasoning": ""}',  # right
        "{broken",  # unparsable -> wrong
    ]
    preds = [M.parse_prediction(t) for t in texts]
    m = M.sentiment_metrics(gold, preds)
    # 2 of 4 right: a skip-the-invalid implementation would say 2/2 = 1.0
    assert m["n"] == 4 and m["accuracy"] == 0.5 and m["invalid"] == 2
    assert m["json_valid"] == 0.5 and m["schema_valid"] == 0.5
    # negative: support 1, never predicted -> P 0, R 0, F1 0.  neutral: tp 1, support 2, predicted 1 ->
    # P 1, R 0.5, F1 2/3.  positive: P 1, R 1, F1 1.  macro = (0 + 2/3 + 1) / 3 = 5/9
    assert m["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert m["per_class"]["neutral"]["recall"] == 0.5
    assert m["macro_f1"] == approx(5 / 9)
    # the invalid answers are in their own column of their gold rows
    conf = m["confusion"]
    assert conf["rows"] == ["negative", "neutral", "positive"]
    assert conf["columns"] == ["negative", "neutral", "positive", INVALID]
    assert conf["matrix"] == [[0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]]


def test_macro_f1_with_a_class_never_predicted():
    # gold: 2 neg, 2 neu, 2 pos; the model never says "positive"
    gold = ["negative", "negative", "neutral", "neutral", "positive", "positive"]
    pred = ["negative", "neutral", "neutral", "neutral", "neutral", "negative"]
    pc = T.per_class(gold, pred)
    # negative: tp 1, predicted 2, support 2 -> P .5 R .5 F1 .5
    assert (pc["negative"]["precision"], pc["negative"]["recall"], pc["negative"]["f1"]) == (0.5, 0.5, 0.5)
    # neutral: tp 2, predicted 4, support 2 -> P .5 R 1 F1 2/3
    assert pc["neutral"]["f1"] == approx(2 / 3)
    # positive: never predicted -> P 0 (no division error), R 0, F1 0, still in the average
    assert pc["positive"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    assert T.macro_f1(gold, pred) == approx((0.5 + 2 / 3 + 0) / 3)
    assert T.accuracy(gold, pred) == approx(3 / 6)


def test_macro_f1_matches_sklearn_including_invalid():
    from sklearn.metrics import accuracy_score, f1_score

    gold = ["negative", "neutral", "positive", "neutral", "neutral", "positive", "negative"]
    pred = ["negative", INVALID, "positive", "positive", "neutral", INVALID, "neutral"]
    labels = ["negative", "neutral", "positive"]
    assert T.macro_f1(gold, pred) == approx(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    assert T.accuracy(gold, pred) == approx(accuracy_score(gold, pred))


def test_label_set_is_the_union_of_gold_and_valid_predictions():
    # only neutral in gold, the model wrongly says positive once: positive joins the average with F1 0
    gold = ["neutral", "neutral", "neutral"]
    pred = ["neutral", "positive", INVALID]
    assert T.label_set(gold, pred) == ["neutral", "positive"]
    # neutral: tp 1, predicted 1, support 3 -> P 1, R 1/3, F1 0.5; positive: F1 0 -> macro 0.25
    assert T.macro_f1(gold, pred) == approx(0.25)
    # a fixed label list overrides the union
    assert T.macro_f1(gold, pred, labels=["neutral"]) == approx(0.5)


def test_gold_must_be_labeled_and_lengths_match():
    with pytest.raises(ValueError, match="gold"):
        T.accuracy([INVALID], [INVALID])
    with pytest.raises(ValueError, match="2 gold"):
        T.accuracy(["neutral", "neutral"], ["neutral"])


def test_empty_inputs_are_zero_not_errors():
    assert T.accuracy([], []) == 0.0 and T.macro_f1([], []) == 0.0 and T.rate([]) == 0.0


# ------------------------------------------------------------------------------------------------ scores
def test_mae_pearson_by_hand():
    gold = [1.0, 2.0, 3.0]
    pred = [1.0, 2.0, 5.0]
    assert T.mae(gold, pred) == approx(2 / 3)  # |0|+|0|+|2| over 3
    # x mean 2, y mean 8/3: sxy = (-1)(-5/3)+0+(1)(7/3) = 4; sxx = 2; syy = 25/9+4/9+49/9 = 78/9
    assert T.pearson(gold, pred) == approx(4 / math.sqrt(2 * 78 / 9))
    assert T.pearson([1, 1, 1], [1, 2, 3]) is None  # constant: undefined
    assert T.pearson([1], [2]) is None


def test_spearman_with_ties_uses_average_ranks():
    x = [1.0, 2.0, 2.0, 3.0]
    y = [1.0, 3.0, 2.0, 4.0]
    assert T.rankdata(x) == [1.0, 2.5, 2.5, 4.0]
    # ranks x [1, 2.5, 2.5, 4] (mean 2.5), y [1, 3, 2, 4] (mean 2.5)
    # sxy = (-1.5)(-1.5)+0+0+(1.5)(1.5) = 4.5; sxx = 4.5; syy = 2.25+.25+.25+2.25 = 5
    assert T.spearman(x, y) == approx(4.5 / math.sqrt(4.5 * 5))
    from scipy.stats import spearmanr

    assert T.spearman(x, y) == approx(spearmanr(x, y).statistic)
    assert T.rankdata([5, 5, 5]) == [2.0, 2.0, 2.0]


def test_score_metrics_impute_invalid_as_zero_and_skip_items_without_gold():
    gold = [0.5, None, -0.5, 0.25]
    pred = [0.5, 0.9, None, 0.75]  # item 2 is None (gold missing) -> ignored; item 3 invalid -> 0.0
    s = T.score_metrics(gold, pred)
    assert s["n"] == 3 and s["n_imputed"] == 1
    assert s["mae"] == approx((0 + 0.5 + 0.5) / 3)
    assert T.score_metrics([None, None], [0.1, 0.2]) is None


# ----------------------------------------------------------------------------------------------- tickers
def test_ticker_precision_recall():
    gold = [["AAPL"], ["DELL", "HPE"], [], ["TSLA"]]
    pred = ["AAPL", "$dell", "SPY", None]
    t = M.ticker_metrics(gold, pred)
    # tp: AAPL, DELL = 2; fp: SPY = 1; fn: HPE, TSLA = 2
    assert (t["tp"], t["fp"], t["fn"]) == (2, 1, 2)
    assert t["precision"] == approx(2 / 3) and t["recall"] == approx(2 / 4)
    assert M.ticker_metrics([[], []], [None, None]) is None


def test_sentiment_metrics_full_dict():
    gold = ["positive", "negative"]
    preds = [M.parse_prediction(GOOD), M.parse_prediction('{"ticker": "X", "sentiment": "negative", "score": -0.4, "reasoning": ""}')]
    m = M.sentiment_metrics(gold, preds, gold_scores=[0.6, -0.8], gold_tickers=[["AAPL"], ["Y"]])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["scores"]["mae"] == approx((0.2 + 0.4) / 2)
    assert m["tickers"]["precision"] == 0.5 and m["tickers"]["recall"] == 0.5


# ------------------------------------------------------------------------------------------ generic tasks
def test_exact_contains_regex():
    assert M.exact_match("  Paris \n", "Paris") and not M.exact_match("paris", "Paris")
    assert M.contains("The answer is PARIS.", "paris") and not M.contains("Lyon", "Paris")
    assert M.regex_match("Answer: 42\nbecause", "42", r"Answer:\s*(\d+)")
    assert not M.regex_match("no number here", "42", r"Answer:\s*(\d+)")  # no match -> wrong
    assert M.regex_match("x 42 y", "42", r"\d+")  # no group -> whole match


def test_sql_exact_match():
    gold = "SELECT COUNT(*) FROM head WHERE age > 56"
    assert M.sql_exact_match("select count(*) from head where age > 56;", gold)
    assert M.sql_exact_match("```sql\nSELECT  COUNT(*)\nFROM head WHERE age>56\n```", gold)
    assert not M.sql_exact_match("SELECT COUNT(*) FROM head WHERE age > 65", gold)
    # string literals keep their case but not their quote style
    assert M.sql_exact_match('SELECT a FROM t WHERE b = "Bob"', "SELECT a FROM t WHERE b = 'Bob'")
    assert not M.sql_exact_match("SELECT a FROM t WHERE b = 'bob'", "SELECT a FROM t WHERE b = 'Bob'")


def test_load_metric_and_text_metric_scores():
    fn = M.load_metric("tickerpulse.evaluate.metrics:sql_exact_match")
    means, values = M.text_metric_scores(fn, ["SELECT 1", "SELECT 2"], ["select 1", "SELECT 3"])
    assert values == [True, False] and means == {"mean": 0.5}
    assert M.load_metric("exact") is M.exact_match
    with pytest.raises(ValueError, match="unknown metric"):
        M.load_metric("bleu")
    with pytest.raises(ValueError, match="cannot load"):
        M.load_metric("tickerpulse.evaluate.metrics:nope")

    def three_args(pred, gold, item):
        return {"len_ok": len(pred) <= item["max"], "em": pred == gold}

    means, _ = M.text_metric_scores(three_args, ["ab", "abc"], ["ab", "x"], [{"max": 2}, {"max": 2}])
    assert means == {"len_ok": 0.5, "em": 0.5}
