"""Label and score metrics of the sentiment task as pure functions over plain lists, so every number can be
checked by hand. They live with the task because calibration (fitted on validation data) and evaluation
(`tickerpulse.evaluate`) must score labels the same way.

Conventions (scikit-learn's defaults, written out): an answer that does not parse gets the label `"invalid"`,
which is never skipped (wrong for accuracy, its own confusion column); precision of a class nobody predicted
is 0; macro-F1 averages over the union of gold and valid predicted classes unless `labels` is given;
Spearman uses average ranks for ties; an invalid answer's score is imputed as 0.0 and counted in `n_imputed`.

`bootstrap_interval` puts a percentile interval around any of them: test sets here are small (50 conflict
targets, 178 FiQA texts), and a number one run moves by a few points should be read with its interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from tickerpulse.task.contract import LABELS

INVALID = "invalid"


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


# ----------------------------------------------------------------------------------------------- intervals
def bootstrap_interval(groups: int, statistic: Callable[[Sequence[int]], float | None], *, draws: int = 1000,
                       seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of a metric over a test set.

    Args:
        groups: how many independent units the test set has: items, or paragraphs when the items of one
            paragraph are not independent (resampling whole paragraphs keeps their correlation).
        statistic: the metric on a resample, given as the drawn unit indices (with repeats); None when it is
            undefined on that resample (e.g. no conflicting paragraph drawn).
        draws, seed, level: resamples, their seed (the same seed draws the same resamples, so two metrics of
            one test set share them), and the interval's coverage.

    Returns:
        [low, high] (a list: it goes into JSON files as it is), or None when there is nothing to resample or
        the metric is undefined on half the draws.
    """
    if not 0 < level < 1 or draws < 1:
        raise ValueError(f"level must be in (0, 1) and draws >= 1, not {level}, {draws}")
    if groups < 1:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(draws):
        v = statistic([rng.randrange(groups) for _ in range(groups)])
        if v is not None and math.isfinite(v):
            values.append(float(v))
    if 2 * len(values) < draws:
        return None
    values.sort()
    tail = (1 - level) / 2

    def at(q: float) -> float:  # linear interpolation between order statistics (numpy's default quantile)
        pos = q * (len(values) - 1)
        lo = math.floor(pos)
        return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)

    return [at(tail), at(1 - tail)]
