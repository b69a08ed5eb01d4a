"""Task metrics as pure functions over plain lists, so every number can be checked by hand.

Label and score metrics (and their conventions) are the task's own, `tickerpulse.task.metrics`; this module
adds answer parsing, ticker metrics, the per-system sentiment summary and metrics for generic text tasks.

Known limitation: ticker precision/recall compares one predicted ticker per answer against the item's gold
ticker set; a post about several tickers cannot reach full recall with one answer.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tickerpulse.task.contract import LABELS, extract_json, parse_answer
from tickerpulse.task.metrics import INVALID, accuracy, classification_report, macro_f1, rate, score_metrics


TextMetric = Callable[..., Any]


# ----------------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class ParsedPrediction:
    """What one generated answer amounts to.

    Attributes:
        json_valid: the whole answer (whitespace stripped) is one JSON object, nothing around it.
        json_found: a JSON object can be extracted from the answer (prose or code fences around it allowed).
        schema_valid: `parse_answer` accepted it (an extracted object that satisfies `SentimentAnswer`).
        label: the answer's sentiment when schema-valid, else `"invalid"`.
        label_lenient: the `sentiment` field of any extracted object when it is one of LABELS (even if
            another field breaks the schema), else `"invalid"`. Reported beside the strict numbers only.
        score, ticker: from the schema-valid answer, else None.
        error: why it is not schema-valid (None when it is).
    """

    json_valid: bool
    json_found: bool
    schema_valid: bool
    label: str
    label_lenient: str
    score: float | None
    ticker: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_prediction(text: str) -> ParsedPrediction:
    """Classify one generated sentiment answer (never raises)."""
    stripped = (text or "").strip()
    try:
        json_valid = isinstance(json.loads(stripped), dict)
    except (json.JSONDecodeError, RecursionError):
        json_valid = False
    obj, _ = extract_json(stripped)
    lenient = obj.get("sentiment") if obj is not None else None
    label_lenient = lenient if isinstance(lenient, str) and lenient in LABELS else INVALID
    answer, error = parse_answer(stripped)
    if answer is None:
        return ParsedPrediction(json_valid, obj is not None, False, INVALID, label_lenient, None, None, error)
    return ParsedPrediction(json_valid, True, True, answer.sentiment, label_lenient, answer.score, answer.ticker, None)


# --------------------------------------------------------------------------------------------- tickers
def ticker_metrics(gold: Sequence[Sequence[str]], pred: Sequence[str | None]) -> dict[str, Any] | None:
    """Micro precision/recall/F1 of predicted tickers against each item's gold ticker set.

    Items with no gold tickers still count: a ticker predicted there is a false positive. Returns None when
    no item has a gold ticker and none was predicted (nothing to measure).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold ticker sets but {len(pred)} predictions")
    tp = fp = fn = 0
    for g, p in zip(gold, pred):
        gs = {t.upper().lstrip("$") for t in g}
        ps = {p.upper().lstrip("$")} if p else set()
        tp += len(gs & ps)
        fp += len(ps - gs)
        fn += len(gs - ps)
    if tp + fp + fn == 0:
        return None
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


# ------------------------------------------------------------------------------------------- sentiment
def sentiment_metrics(
    gold_labels: Sequence[str],
    predictions: Sequence[ParsedPrediction],
    gold_scores: Sequence[float | None] | None = None,
    gold_tickers: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Every sentiment-task metric for one system on one item list.

    Returns a dict with n, json_valid, json_found, schema_valid (rates), accuracy, macro_f1, per_class,
    confusion, invalid (count), accuracy_lenient / macro_f1_lenient, scores (or None), tickers (or None).
    """
    labels = [p.label for p in predictions]
    report = classification_report(gold_labels, labels)
    lenient = [p.label_lenient for p in predictions]
    out: dict[str, Any] = {
        "n": len(predictions),
        "json_valid": rate([p.json_valid for p in predictions]),
        "json_found": rate([p.json_found for p in predictions]),
        "schema_valid": rate([p.schema_valid for p in predictions]),
        **report,
        "accuracy_lenient": accuracy(gold_labels, lenient),
        "macro_f1_lenient": macro_f1(gold_labels, lenient),
        "scores": None,
        "tickers": None,
    }
    if gold_scores is not None:
        out["scores"] = score_metrics(gold_scores, [p.score for p in predictions])
    if gold_tickers is not None:
        out["tickers"] = ticker_metrics(gold_tickers, [p.ticker for p in predictions])
    return out


# ------------------------------------------------------------------------------------ generic text tasks
def _norm(text: str) -> str:
    return " ".join((text or "").split())


def exact_match(pred: str, gold: str) -> bool:
    """Equal after collapsing whitespace (case kept)."""
    return _norm(pred) == _norm(gold)


def contains(pred: str, gold: str) -> bool:
    """The gold answer appears in the prediction (whitespace collapsed, case-insensitive)."""
    return _norm(gold).lower() in _norm(pred).lower()


def regex_match(pred: str, gold: str, pattern: str) -> bool:
    """Extract the answer from `pred` with `pattern` (group 1 if it has one, else the whole match), then
    exact-match it against `gold` (lm-eval-harness style). No match counts as wrong."""
    m = re.search(pattern, pred or "", re.S)
    if m is None:
        return False
    return exact_match(m.group(1) if m.re.groups else m.group(0), gold)


_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"])*\"|\w+|[^\w\s]")


def sql_exact_match(pred: str, gold: str) -> bool:
    """Text-to-SQL exact match (sql-create-context style): token sequences equal after lower-casing
    everything outside string literals, normalising quote style and dropping a trailing semicolon
    or a ```sql fence. A pluggable metric: `--metric tickerpulse.evaluate.metrics:sql_exact_match`."""

    def tokens(sql: str) -> list[str]:
        sql = re.sub(r"^\s*```(?:sql)?|```\s*$", "", (sql or "").strip(), flags=re.I).strip().rstrip(";").strip()
        out = []
        for tok in _SQL_TOKEN.findall(sql):
            if tok[0] in "'\"":
                out.append("'" + tok[1:-1].replace("''", "'") + "'")
            else:
                out.append(tok.lower())
        return out

    return tokens(pred) == tokens(gold)


BUILTIN_TEXT_METRICS: dict[str, TextMetric] = {"exact": exact_match, "contains": contains}


def load_metric(spec: str) -> TextMetric:
    """A text metric by name (`exact`, `contains`) or `module:function`.

    The function is called as `fn(pred, gold)` (or `fn(pred, gold, item)` when it takes three arguments)
    and returns a bool/number, or a dict of numbers; results are averaged over items.

    Raises:
        ValueError: unknown name, bad spec, or a module/function that cannot be imported.
    """
    if spec in BUILTIN_TEXT_METRICS:
        return BUILTIN_TEXT_METRICS[spec]
    if ":" not in spec:
        names = ", ".join([*BUILTIN_TEXT_METRICS, "regex"])
        raise ValueError(f"unknown metric {spec!r}: use one of {names} or module:function")
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load metric {spec!r}: {exc}") from None
    if not callable(fn):
        raise ValueError(f"metric {spec!r} is not callable")
    return fn


def _call(fn: TextMetric, pred: str, gold: str, item: dict[str, Any]) -> Any:
    import inspect

    try:
        n = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n = 2
    return fn(pred, gold, item) if n >= 3 else fn(pred, gold)


def text_metric_scores(fn: TextMetric, preds: Sequence[str], golds: Sequence[str],
                       items: Sequence[dict[str, Any]] | None = None) -> tuple[dict[str, float], list[Any]]:
    """Apply one text metric to every item; returns (mean of each value, per-item values)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(golds)} gold answers but {len(preds)} predictions")
    values = [_call(fn, p, g, (items[i] if items else {})) for i, (p, g) in enumerate(zip(preds, golds))]
    if not values:
        return {}, values
    if isinstance(values[0], dict):
        keys = list(values[0])
        return {k: sum(float(v[k]) for v in values) / len(values) for k in keys}, values
    return {"mean": sum(float(v) for v in values) / len(values)}, values
