"""Fast-mode label calibration, read from `calibration.json` in an adapter or model folder.

`{"temperature": T, "label_bias": [b_neg, b_neu, b_pos]}`: the three label logits z become
`softmax((z + b) / T)`. The bias moves the decision boundary (the label is `argmax(z + b)`, independent of T),
the temperature only the confidence, i.e. the score p(pos) - p(neg). Both are fitted on validation data by
`fit_label_bias` / `fit_temperature` below; a missing file or key means T = 1, b = 0.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickerpulse.task.contract import LABELS
from tickerpulse.task.metrics import macro_f1

FILE = "calibration.json"


@dataclass(frozen=True)
class LabelCalibration:
    temperature: float = 1.0
    label_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def read(cls, *folders: Path | None) -> "LabelCalibration":
        """The first folder's calibration.json that exists (unusable values fall back to the identity)."""
        for folder in folders:
            if folder is None or not (Path(folder) / FILE).is_file():
                continue
            raw = json.loads((Path(folder) / FILE).read_text())
            t = float(raw.get("temperature", 1.0))
            bias = raw.get("label_bias") or (0.0, 0.0, 0.0)
            ok_bias = len(bias) == 3 and all(math.isfinite(float(b)) for b in bias)
            return cls(t if math.isfinite(t) and t > 0 else 1.0,
                       tuple(float(b) for b in bias) if ok_bias else (0.0, 0.0, 0.0))  # type: ignore[arg-type]
        return cls()

    def probs(self, z: Any) -> Any:
        """Label probabilities from label logits `z` (..., 3): a torch tensor or a numpy array."""
        if hasattr(z, "softmax"):  # torch
            import torch

            b = torch.tensor(self.label_bias, dtype=z.dtype, device=z.device)
            return torch.softmax((z + b) / self.temperature, dim=-1)
        import numpy as np

        x = (np.asarray(z, dtype=np.float64) + np.asarray(self.label_bias)) / self.temperature
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def softmax_t(p: Sequence[float], t: float, bias: Sequence[float] = (0.0, 0.0, 0.0)) -> list[float]:
    """Re-calibrate label probabilities p as the server would: `LabelCalibration(t, bias)` on log p (softmax
    is shift-invariant, so log p stands in for the label logits)."""
    logs = [math.log(max(x, 1e-12)) for x in p]
    return [float(q) for q in LabelCalibration(t, tuple(bias)).probs(logs)]  # type: ignore[arg-type]


def _per_group_f1(logs: Sequence[Sequence[float]], gold: Sequence[str], groups: Sequence[str],
                  bias: Sequence[float]) -> list[float]:
    """Macro-F1 (over the three labels) of the labels argmax(log p + bias), per group (dataset), sorted by name."""
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
    offsets that lower no dataset's macro-F1, so one boundary serves every dataset and a small dataset cannot
    buy its gain with a large one's loss. Two offsets fitted and scored on the same few hundred items overfit,
    so they are kept only if they also win under `folds`-fold cross-validation (fit on the other folds, score
    on the held-out one) by more than the standard error of that mean gain; otherwise no offset is applied.
    """
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
