"""Task metrics as pure functions over plain lists, so every number can be checked by hand.

Conventions (the same as scikit-learn's defaults, written out so nobody has to guess):
- An answer that does not parse into a schema-valid `SentimentAnswer` gets the label `"invalid"`. It is
  never skipped: it counts as wrong for accuracy, lowers the recall of its gold class, and has its own
  column in the confusion matrix. No gold label is ever `"invalid"`.
- Precision of a class nobody predicted is 0; recall of a class with no gold support is 0; F1 is 0 when
  precision + recall is 0.
- Macro-F1 averages over the classes that occur in the gold labels or in the valid predictions (the
  union, as `sklearn.metrics.f1_score(average="macro")` does), unless `labels` is given.
- Spearman uses average ranks for ties (as `scipy.stats.spearmanr`).
- Score metrics pair gold scores with predicted scores; an item whose answer is invalid is scored as 0.0
  (the neutral fallback a pipeline stores) rather than dropped, and `n_imputed` says how many were.

Known limitation: ticker precision/recall compares one predicted ticker per answer against the item's gold
ticker set; a post about several tickers cannot reach full recall with one answer.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tickerpulse.data.sentiment import LABELS, extract_json, parse_answer

INVALID = "invalid"

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


# ---------------------------------------------------------------------------------------- classification
def rate(flags: Sequence[bool]) -> float:
    """Share of True values (0.0 for an empty list)."""
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def _check(gold: Sequence[str], pred: Sequence[str]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if INVALID in gold:
        raise ValueError(f"a gold label is {INVALID!r}: gold data must be labeled")


def label_set(gold: Sequence[str], pred: Sequence[str]) -> list[str]:
    """Classes that occur in gold or valid predictions; LABELS first in their order, others sorted."""
    seen = (set(gold) | set(pred)) - {INVALID}
    return [lab for lab in LABELS if lab in seen] + sorted(seen - set(LABELS))


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Share of exact label matches; an "invalid" prediction is always wrong."""
    _check(gold, pred)
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def per_class(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """{label: {precision, recall, f1, support, predicted}} for each class."""
    _check(gold, pred)
    out: dict[str, dict[str, float]] = {}
    for lab in labels if labels is not None else label_set(gold, pred):
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred))
        support = sum(g == lab for g in gold)
        predicted = sum(p == lab for p in pred)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}
    return out


def macro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: see the module docstring)."""
    classes = per_class(gold, pred, labels)
    return sum(c["f1"] for c in classes.values()) / len(classes) if classes else 0.0


def confusion_matrix(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Counts with gold classes as rows and predicted classes + "invalid" as columns.

    A prediction outside `labels` lands in the "invalid" column. Returns {rows, columns, matrix}.
    """
    _check(gold, pred)
    rows = list(labels) + sorted(set(gold) - set(labels))
    cols = rows + [INVALID]
    matrix = [[0] * len(cols) for _ in rows]
    for g, p in zip(gold, pred):
        matrix[rows.index(g)][cols.index(p) if p in rows else len(cols) - 1] += 1
    return {"rows": rows, "columns": cols, "matrix": matrix}


def classification_report(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1 and the confusion matrix in one dict (what reports print)."""
    classes = per_class(gold, pred, labels)
    return {
        "n": len(gold),
        "accuracy": accuracy(gold, pred),
        "macro_f1": sum(c["f1"] for c in classes.values()) / len(classes) if classes else 0.0,
        "per_class": classes,
        "invalid": sum(p == INVALID for p in pred),
        "confusion": confusion_matrix(gold, pred, LABELS if set(gold) <= set(LABELS) else sorted(set(gold))),
    }


# ---------------------------------------------------------------------------------------------- scores
def mae(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Mean absolute error."""
    if len(gold) != len(pred) or not gold:
        raise ValueError("mae needs two non-empty lists of equal length")
    return sum(abs(g - p) for g, p in zip(gold, pred)) / len(gold)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when undefined (fewer than 2 points or a constant list)."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} x values but {len(y)} y values")
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def rankdata(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of the ranks they span ([10, 20, 20] -> [1, 2.5, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation = Pearson of average ranks; None when undefined."""
    return pearson(rankdata(x), rankdata(y))


def score_metrics(gold: Sequence[float | None], pred: Sequence[float | None]) -> dict[str, Any] | None:
    """MAE, Pearson and Spearman over the items that have a gold score (None when none has).

    A missing prediction (invalid answer) is scored as 0.0 and counted in `n_imputed`.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold scores but {len(pred)} predictions")
    pairs = [(g, p) for g, p in zip(gold, pred) if g is not None]
    if not pairs:
        return None
    g = [float(a) for a, _ in pairs]
    p = [0.0 if b is None else float(b) for _, b in pairs]
    return {
        "n": len(pairs),
        "n_imputed": sum(b is None for _, b in pairs),
        "mae": mae(g, p),
        "pearson": pearson(g, p),
        "spearman": spearman(g, p),
    }


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
