"""Baselines on hand-made data."""

from __future__ import annotations

from tickerpulse.evaluate import baselines


def test_majority() -> None:
    labels, scores = baselines.majority(["neutral", "positive", "neutral"], ["a", "b"])
    assert labels == ["neutral", "neutral"] and scores == [0.0, 0.0]
    assert baselines.majority(["positive", "negative"], ["a"])[0] == ["negative"]  # tie: alphabetical


def test_vader_thresholds() -> None:
    labels, scores = baselines.vader(["This is great, wonderful and excellent!", "Terrible awful loss, a disaster.",
                                      "The company files its report."])
    assert labels == ["positive", "negative", "neutral"]
    assert scores[0] > 0.05 and scores[1] < -0.05 and abs(scores[2]) < 0.05


def test_tfidf_lr_learns_hand_made_data() -> None:
    pos = [f"$X{i} beats estimates and raises guidance" for i in range(12)]
    neg = [f"$X{i} misses estimates and cuts outlook" for i in range(12)]
    neu = [f"$X{i} schedules its annual meeting" for i in range(12)]
    model = baselines.TfidfLR(seed=0).fit(pos + neg + neu, ["positive"] * 12 + ["negative"] * 12 + ["neutral"] * 12)
    labels, scores = model.predict(["$ABC beats estimates", "$ABC cuts outlook", "$ABC annual meeting"])
    assert labels == ["positive", "negative", "neutral"]
    assert scores[0] > 0 > scores[1]
