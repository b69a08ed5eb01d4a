"""task.metrics.bootstrap_interval: the interval around a test-set metric that the card prints."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.task.metrics import bootstrap_interval


def mean_of(values: list[int]):
    return lambda draw: sum(values[j] for j in draw) / len(draw)


def test_a_proportion_gets_about_the_normal_approximation_width():
    values = [1] * 320 + [0] * 80  # p = 0.8, n = 400: standard error 0.02, a 95% interval about +-0.039
    lo, hi = bootstrap_interval(len(values), mean_of(values), draws=2000)
    assert lo < 0.8 < hi
    assert 0.8 - lo == pytest.approx(1.96 * 0.02, abs=0.008) and hi - 0.8 == pytest.approx(1.96 * 0.02, abs=0.008)


def test_same_seed_same_draws_and_constant_metrics_have_no_width():
    values = [0, 1, 1, 0, 1]
    assert bootstrap_interval(5, mean_of(values), seed=3) == bootstrap_interval(5, mean_of(values), seed=3)
    assert bootstrap_interval(5, lambda draw: 0.5) == [0.5, 0.5]


def test_undefined_metrics_and_empty_sets_give_none_and_bad_settings_raise():
    assert bootstrap_interval(0, lambda draw: 1.0) is None
    assert bootstrap_interval(10, lambda draw: None) is None
    assert bootstrap_interval(10, lambda draw: math.nan) is None
    # a metric undefined on some resamples (here: when unit 0 is not drawn) is bounded by the others
    iv = bootstrap_interval(3, lambda draw: 1.0 if 0 in draw else None)
    assert iv == [1.0, 1.0]
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(5, lambda draw: 1.0, level=1.0)
    with pytest.raises(ValueError, match="draws"):
        bootstrap_interval(5, lambda draw: 1.0, draws=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=60), st.integers(0, 2**16))
def test_a_mean_interval_lies_within_the_values_and_holds_the_mean(values, seed):
    lo, hi = bootstrap_interval(len(values), mean_of(values), draws=200, seed=seed)
    mean = sum(values) / len(values)
    assert min(values) <= lo <= hi <= max(values)
    assert lo <= mean + 1e-12 and mean - 1e-12 <= hi
