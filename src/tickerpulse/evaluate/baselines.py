"""The cheap systems users run today, trained/fitted on exactly the student's training rows.

Each returns (labels, scores) for a list of texts; `baseline_labelers` wraps them as label-only labelers
for `runner.run_labeler`:
- majority class: the most frequent training label, score 0;
- VADER (`vaderSentiment`): compound >= 0.05 positive, <= -0.05 negative (the authors' thresholds),
  score = compound;
- TF-IDF (word 1-2 grams + char 2-5 grams) + logistic regression (scikit-learn, balanced class weights),
  score = p(positive) - p(negative).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import partial

from tickerpulse.evaluate.labelers import FunctionLabeler

Prediction = tuple[list[str], list[float]]


def majority(train_labels: Sequence[str], texts: Sequence[str]) -> Prediction:
    """The most frequent training label for every text (ties: alphabetical first)."""
    counts = Counter(train_labels)
    label = sorted(counts, key=lambda k: (-counts[k], k))[0]
    return [label] * len(texts), [0.0] * len(texts)


def vader(texts: Sequence[str], threshold: float = 0.05) -> Prediction:
    """VADER's compound score and its standard thresholds."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    labels, scores = [], []
    for t in texts:
        c = float(sia.polarity_scores(t)["compound"])
        labels.append("positive" if c >= threshold else "negative" if c <= -threshold else "neutral")
        scores.append(c)
    return labels, scores


class TfidfLR:
    """TF-IDF + logistic regression fitted once on the training texts, then applied to any test set."""

    def __init__(self, seed: int = 0, c: float = 4.0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
        ])
        self.pipe = make_pipeline(features, LogisticRegression(C=c, max_iter=2000, class_weight="balanced",
                                                               random_state=seed))

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> "TfidfLR":
        self.pipe.fit(list(texts), list(labels))
        return self

    def predict(self, texts: Sequence[str]) -> Prediction:
        proba = self.pipe.predict_proba(list(texts))
        classes = list(self.pipe.classes_)
        labels = [classes[int(row.argmax())] for row in proba]
        pos = classes.index("positive") if "positive" in classes else None
        neg = classes.index("negative") if "negative" in classes else None
        scores = [float((row[pos] if pos is not None else 0.0) - (row[neg] if neg is not None else 0.0)) for row in proba]
        return labels, scores


def baseline_labelers(train_labels: Sequence[str], tfidf: TfidfLR) -> list[FunctionLabeler]:
    """Majority class, VADER and a fitted TF-IDF + LR as labelers (names as reports and the card show them)."""
    return [FunctionLabeler("majority class", partial(majority, list(train_labels)), "most frequent training label"),
            FunctionLabeler("VADER", vader, "vaderSentiment compound, +-0.05"),
            FunctionLabeler("TF-IDF + LR", tfidf.predict, "word 1-2 + char 2-5 grams, same train rows")]
