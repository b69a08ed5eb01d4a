"""Fitting the served fast mode's calibration (`task.calibration`: label offsets, then a score temperature)
on labeled validation questions, through any function that gives fast mode's label probabilities (the
recipe passes `SentimentEngine.label_probs`). Never fitted on test data: callers pass validation rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tickerpulse.task.calibration import fit_label_bias, fit_temperature
from tickerpulse.task.questions import Question


def fit_calibration(label_probs: Callable[[list[tuple[str, str | None]]], list[list[float]]],
                    questions: Sequence[Question], *, bias_grid: Sequence[float], temperature_grid: Sequence[float],
                    seed: int = 0) -> dict[str, Any]:
    """The calibration.json content from labeled validation questions: label offsets fitted for mean macro-F1
    over the questions' groups (none when `bias_grid` is empty), then the temperature for score MAE where a
    question has a gold score (label NLL otherwise). `label_probs` takes (text, ticker) pairs.

    Returns:
        {"temperature", "label_bias", <fit_temperature's fields>, "bias_fit": <fit_label_bias's fields>}
    """
    labels = [str(q.label) for q in questions]
    probs = label_probs([(q.text, q.target) for q in questions])
    bias = (fit_label_bias(probs, labels, bias_grid, [q.group for q in questions], seed=seed) if bias_grid
            else {"label_bias": [0.0] * 3})
    fit = fit_temperature(probs, labels, [q.score for q in questions], temperature_grid, bias["label_bias"])
    return {"temperature": fit["temperature"], "label_bias": bias["label_bias"], **fit, "bias_fit": bias}
