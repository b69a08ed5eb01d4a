"""Calibration of the fast-mode labels: the fits (label bias, temperature) and applying them."""

from __future__ import annotations

from functools import partial

from tickerpulse.task import metrics
from tickerpulse.task.calibration import fit_label_bias, fit_temperature, softmax_t
from tickerpulse.task.contract import LABELS

macro_f1 = partial(metrics.macro_f1, labels=LABELS)  # over the three labels, as the bias fit scores it


def test_softmax_t_and_fit_temperature() -> None:
    p = [0.01, 0.01, 0.98]
    assert abs(sum(softmax_t(p, 3.0)) - 1) < 1e-9
    assert softmax_t(p, 3.0)[2] < 0.98  # a higher temperature softens
    # gold scores around 0.4 for confident positives: the fit must soften (T > 1)
    probs = [[0.005, 0.005, 0.99]] * 10
    fit = fit_temperature(probs, ["positive"] * 10, [0.4] * 10, [0.5, 1.0, 2.0, 4.0, 8.0])
    assert fit["temperature"] > 1.0 and fit["objective"] == "score_mae" and fit["fitted_on"] == "valid"
    # no gold scores: label NLL; confident and right -> the sharpest temperature wins
    fit = fit_temperature(probs, ["positive"] * 10, [None] * 10, [0.5, 1.0, 2.0])
    assert fit["objective"] == "label_nll" and fit["temperature"] == 0.5


def test_fit_label_bias_moves_the_boundary_only_when_it_holds_out() -> None:
    # a student that leans neutral: the minority items have neutral as the top label by a small margin
    probs = ([[0.1, 0.8, 0.1]] * 6 + [[0.35, 0.55, 0.1]] * 3 + [[0.1, 0.55, 0.35]] * 3) * 4
    gold = (["neutral"] * 6 + ["negative"] * 3 + ["positive"] * 3) * 4
    fit = fit_label_bias(probs, gold, [x / 2 for x in range(-4, 5)])
    assert fit["without_bias"] == macro_f1(gold, ["neutral"] * 48) < fit["value"] == 1.0
    bn, bneu, bp = fit["label_bias"]
    assert bneu == 0.0 and bn > 0 and bp > 0 and fit["kept"] and fit["cv_gain"] > 0 and fit["fitted_on"] == "valid"
    # nothing to gain: the smallest shift (none) wins the tie
    assert fit_label_bias([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]] * 4, ["negative", "positive"] * 4,
                          [-1.0, 0.0, 1.0])["label_bias"] == [0.0, 0.0, 0.0]
    # noise: an offset that only fits the items it was fitted on is not kept
    import random

    rng = random.Random(1)
    noisy = [[rng.random() + 0.01 for _ in range(3)] for _ in range(60)]
    labels = [rng.choice(["negative", "neutral", "positive"]) for _ in range(60)]
    fit = fit_label_bias([[x / sum(p) for x in p] for p in noisy], labels, [x / 4 for x in range(-8, 9)])
    assert fit["cv_folds"] == 5 and fit["cv_gain_se"] >= 0
    assert fit["kept"] == (fit["cv_gain"] > fit["cv_gain_se"])
    assert fit["label_bias"] == (fit["fitted_bias"] if fit["kept"] else [0.0, 0.0, 0.0])


def test_fit_label_bias_never_trades_one_dataset_for_another() -> None:
    # dataset "a" leans neutral on its minority items (an offset helps); on "b" the same offset would turn
    # true neutrals into positives. The mean alone would take the offset; the constraint refuses it.
    a = [[0.1, 0.8, 0.1]] * 6 + [[0.1, 0.55, 0.35]] * 6
    b = [[0.1, 0.55, 0.35]] * 6 + [[0.1, 0.1, 0.8]] * 3
    gold_a = ["neutral"] * 6 + ["positive"] * 6
    gold_b = ["neutral"] * 6 + ["positive"] * 3
    probs, gold, groups = (a + b) * 3, (gold_a + gold_b) * 3, (["a"] * 12 + ["b"] * 9) * 3
    fit = fit_label_bias(probs, gold, [0.0, 0.5, 1.0])
    assert fit["fitted_bias"] == [0.0, 0.0, 0.5]  # pooled as one group the offset pays
    fit = fit_label_bias(probs, gold, [0.0, 0.5, 1.0], groups=groups)
    assert fit["fitted_bias"] == [0.0, 0.0, 0.0] and fit["label_bias"] == [0.0, 0.0, 0.0] and not fit["kept"]
    assert fit["per_dataset_macro_f1"]["a"]["without"] < 1.0 and fit["constraint"] == "no dataset's macro-F1 lower"


def test_fit_label_bias_objective_is_the_mean_over_datasets() -> None:
    probs = [[0.3, 0.4, 0.3]] * 20 + [[0.3, 0.4, 0.3]] * 4
    gold = ["neutral"] * 20 + ["positive"] * 4
    fit = fit_label_bias(probs, gold, [0.0, 0.5], groups=["a"] * 20 + ["b"] * 4)
    per_dataset = (macro_f1(gold[:20], ["neutral"] * 20) + macro_f1(gold[20:], ["neutral"] * 4)) / 2
    assert fit["objective"] == "mean_macro_f1_over_datasets" and fit["without_bias"] == per_dataset
    assert fit["without_bias"] != macro_f1(gold, ["neutral"] * 24)  # not the pooled macro-F1


def test_label_calibration_matches_softmax_t_and_handles_torch_and_numpy() -> None:
    import numpy as np
    import torch

    from tickerpulse.task.calibration import LabelCalibration

    cal = LabelCalibration(2.0, (1.0, 0.0, -0.5))
    z = np.log(np.array([0.2, 0.5, 0.3]))
    expect = softmax_t([0.2, 0.5, 0.3], 2.0, (1.0, 0.0, -0.5))
    assert np.allclose(cal.probs(z), expect)
    assert torch.allclose(cal.probs(torch.tensor(z, dtype=torch.float32)), torch.tensor(expect, dtype=torch.float32))
    assert LabelCalibration.read(None) == LabelCalibration()
