"""Turning each system's predictions into eval results (the eval.json shape) on one test set.

LLM systems go through `evaluate.runner.score_answers` (answer texts -> JSON/schema rates, labels, scores,
tickers); label-only baselines through `runner.label_result`. Either way every number later shown in the
card is read back from these results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.runner import EVAL_SCHEMA_VERSION, GenerationRun, latency_metrics, score_answers


def answers_result(name: str, items: list[EvalItem], texts: list[str], data_info: dict[str, Any],
                   config: dict[str, Any], run: GenerationRun | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An eval result for answer texts (fast-mode dicts dumped as JSON, or generated text)."""
    metrics, per_item = score_answers(items, texts, "sentiment")
    if run is not None:
        metrics.update(latency_metrics(run))
    if extra:
        metrics.update(extra)
    records = [{"id": it.id, "text": it.text, "gold_label": it.gold_label, "gold_score": it.gold_score,
                "gold_tickers": it.gold_tickers, **rec} for it, rec in zip(items, per_item)]
    if run is not None:
        for rec, a in zip(records, run.answers):
            rec.update({"n_tokens": a.n_tokens, "latency_s": round(a.latency, 4), "finish_reason": a.finish_reason})
    return {"tickerpulse_eval": EVAL_SCHEMA_VERSION, "name": name, "config": config, "data": data_info,
            "metrics": metrics, "items": records}


def softmax_t(p: Sequence[float], t: float, bias: Sequence[float] = (0.0, 0.0, 0.0)) -> list[float]:
    """Re-calibrate label probabilities p as the server would: `LabelCalibration(t, bias)` on log p (softmax
    is shift-invariant, so log p stands in for the label logits)."""
    from tickerpulse.serve.calibration import LabelCalibration

    logs = [math.log(max(x, 1e-12)) for x in p]
    return [float(q) for q in LabelCalibration(t, tuple(bias)).probs(logs)]  # type: ignore[arg-type]


def _per_group_f1(logs: Sequence[Sequence[float]], gold: Sequence[str], groups: Sequence[str],
                  bias: Sequence[float]) -> list[float]:
    """Macro-F1 (over the three labels) of the labels argmax(log p + bias), per group (dataset), sorted by name."""
    from tickerpulse.data.sentiment import LABELS
    from tickerpulse.evaluate.metrics import macro_f1

    pred = [LABELS[max(range(3), key=lambda k: z[k] + bias[k])] for z in logs]
    return [macro_f1([g for g, n in zip(gold, groups) if n == name], [q for q, n in zip(pred, groups) if n == name],
                     LABELS) for name in sorted(set(groups))]


def _bias_objective(logs: Sequence[Sequence[float]], gold: Sequence[str], groups: Sequence[str],
                    bias: Sequence[float]) -> float:
    """Mean macro-F1 across the groups (datasets)."""
    f1 = _per_group_f1(logs, gold, groups, bias)
    return sum(f1) / len(f1)


def _bias_search(logs: Sequence[Sequence[float]], gold: Sequence[str], groups: Sequence[str],
                 grid: Sequence[float]) -> tuple[float, tuple[float, float, float]]:
    """(best objective, [b_neg, 0, b_pos]) over the grid among the offsets that lower no group's macro-F1;
    ties go to the smallest shift."""
    zero = _per_group_f1(logs, gold, groups, (0.0, 0.0, 0.0))
    best: tuple[float, float, tuple[float, float, float]] | None = None
    for bn in grid:
        for bp in grid:
            bias = (float(bn), 0.0, float(bp))
            f1 = _per_group_f1(logs, gold, groups, bias)
            if any(a < b for a, b in zip(f1, zero)):
                continue
            key = (sum(f1) / len(f1), -(abs(bn) + abs(bp)), bias)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:  # zero not on the grid and every offset costs some group
        return sum(zero) / len(zero), (0.0, 0.0, 0.0)
    return best[0], best[2]


def fit_label_bias(probs: Sequence[Sequence[float]], gold_labels: Sequence[str], grid: Sequence[float],
                   groups: Sequence[str] | None = None, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Per-label logit offsets [b_neg, 0, b_pos] for the fast-mode decision, from VALIDATION data.

    A student trained on mostly-neutral tweets can lean neutral; shifting the boundary trades some of the
    majority class for the minority ones. Objective: mean macro-F1 over `groups` (the datasets), among the
    offsets that lower no dataset's macro-F1: one boundary serves every dataset, and the mean alone let
    FiQA's 91 validation items (8 neutral) buy +0.115 there with -0.046 on twitter's 1,000. Two offsets fitted and scored on the
    same few hundred items overfit, so the offsets are kept only if they also win under `folds`-fold
    cross-validation (fit on the other folds, score on the held-out one) by more than the standard error of
    that mean gain; otherwise no offset is applied. (A bare `gain > 0` kept offsets on +0.007 that cost an
    undertrained student 4 points of neutral recall.)
    """
    import random

    groups = list(groups) if groups is not None else ["all"] * len(probs)
    logs = [[math.log(max(x, 1e-12)) for x in p] for p in probs]
    zero = (0.0, 0.0, 0.0)
    value, bias = _bias_search(logs, gold_labels, groups, grid)
    names = sorted(set(groups))
    f1_zero, f1_fit = (_per_group_f1(logs, gold_labels, groups, b) for b in (zero, bias))
    without = sum(f1_zero) / len(f1_zero)

    def subset(idx: Sequence[int]) -> tuple[list[list[float]], list[str], list[str]]:
        return [logs[i] for i in idx], [gold_labels[i] for i in idx], [groups[i] for i in idx]

    order = list(range(len(probs)))
    random.Random(seed).shuffle(order)
    gains = []
    for f in range(folds):
        held = set(order[f::folds])
        fit_idx = [i for i in range(len(probs)) if i not in held]
        if not fit_idx or not held:
            continue
        _, b = _bias_search(*subset(fit_idx), grid)
        test = subset(sorted(held))
        gains.append(_bias_objective(*test, b) - _bias_objective(*test, zero))
    cv_gain = sum(gains) / len(gains) if gains else 0.0
    se = (math.sqrt(sum((g - cv_gain) ** 2 for g in gains) / (len(gains) - 1) / len(gains))
          if len(gains) > 1 else 0.0)
    keep = bias != zero and cv_gain > se
    per_ds = {n: {"without": a, "fitted": b} for n, a, b in zip(names, f1_zero, f1_fit)}
    return {"label_bias": list(bias if keep else zero), "objective": "mean_macro_f1_over_datasets",
            "constraint": "no dataset's macro-F1 lower", "per_dataset_macro_f1": per_ds,
            "value": value if keep else without, "without_bias": without, "fitted_bias": list(bias),
            "cv_gain": cv_gain, "cv_gain_se": se, "cv_folds": folds, "kept": keep, "n": len(probs), "fitted_on": "valid"}


def fit_temperature(probs: Sequence[Sequence[float]], gold_labels: Sequence[str],
                    gold_scores: Sequence[float | None], grid: Sequence[float],
                    bias: Sequence[float] = (0.0, 0.0, 0.0)) -> dict[str, Any]:
    """Pick the softmax temperature for fast-mode scores (p(pos) - p(neg)) on VALIDATION data.

    Objective: score MAE over the items with a real gold score (FiQA); without any, label NLL. The label
    (argmax of log p + bias) never changes with the temperature; only the score does.
    """
    from tickerpulse.data.sentiment import LABELS

    scored = [(p, s) for p, s in zip(probs, gold_scores) if s is not None]
    rows = []
    for t in grid:
        if scored:
            obj = sum(abs((q := softmax_t(p, t, bias))[2] - q[0] - s) for p, s in scored) / len(scored)
        else:
            obj = -sum(math.log(max(softmax_t(p, t, bias)[LABELS.index(g)], 1e-12))
                       for p, g in zip(probs, gold_labels)) / max(len(probs), 1)
        rows.append((obj, t))
    best_obj, best_t = min(rows)
    return {"temperature": best_t, "objective": "score_mae" if scored else "label_nll", "value": best_obj,
            "n": len(scored) if scored else len(probs), "fitted_on": "valid", "grid": {str(t): o for o, t in rows}}


def agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of items whose two labels are equal (an invalid answer never agrees)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} labels")
    return sum(x == y and x != "invalid" for x, y in zip(a, b)) / len(a) if a else 0.0


def dump_answer(ans: dict[str, Any]) -> str:
    return json.dumps(ans, ensure_ascii=False)
