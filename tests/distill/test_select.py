"""Selection: normalisation, exact and near-duplicate handling, deterministic cluster-preserving splits."""

from __future__ import annotations

import pytest

from tickerpulse.data.records import Record
from tickerpulse.distill.inputs import load_raw
from tickerpulse.distill.select import plan_splits

from ..data.test_near_duplicates import FAMILY


def _rows(texts: list[str], labels: list[str] | None = None) -> list[Record]:
    return [Record(str(i), t, (labels or [None] * len(texts))[i], "raw") for i, t in enumerate(texts)]


def test_plan_drops_exact_duplicates_and_keeps_clusters_in_one_split():
    texts = [f"Headline number {i}: firm {i} guides {['up', 'down', 'flat'][i % 3]} for fiscal {2000 + i}" for i in range(60)]
    texts += FAMILY + ["Headline number 5: firm 5 guides flat for fiscal 2005 https://t.co/dup"]  # exact dup of #5
    labels = ["neutral"] * len(texts)
    labels[-1] = "positive"  # conflicts with the gold label of its duplicate
    plan = plan_splits(_rows(texts, labels), {"train": 30, "valid": 10, "test": 10}, seed=1, near_dup_threshold=0.7)
    assert plan.stats["exact_duplicates_dropped"] == 1 and plan.stats["duplicate_gold_conflicts"] == 1
    assert plan.stats["candidates"] == 63 and plan.stats["near_duplicate_clusters"] >= 1
    family_idx = {i for i, r in enumerate(plan.rows) if "Extended Stay" in r.text}
    homes = {s for s, q in plan.queues.items() if family_idx & set(q)}
    assert len(homes) == 1  # the whole family lives in one split
    sizes = {s: len(q) for s, q in plan.queues.items()}
    assert sizes["train"] > sizes["valid"] and sizes["train"] > sizes["test"]
    again = plan_splits(_rows(texts, labels), {"train": 30, "valid": 10, "test": 10}, seed=1, near_dup_threshold=0.7)
    assert again.queues == plan.queues  # deterministic
    other = plan_splits(_rows(texts, labels), {"train": 30, "valid": 10, "test": 10}, seed=2, near_dup_threshold=0.7)
    assert other.queues != plan.queues
    dropped = plan_splits(_rows(texts, labels), {"train": 30, "valid": 10, "test": 10}, seed=1,
                          near_dup_threshold=0.7, drop_near_duplicates=True)
    assert sum(len(q) for q in dropped.queues.values()) == 63 - dropped.stats["near_duplicates_dropped"]


def test_real_data_has_no_cluster_across_splits(tfns_file):
    rows = load_raw(tfns_file, limit=3000)
    plan = plan_splits(rows, {"train": 400, "valid": 100, "test": 100}, seed=0)
    assert plan.stats["exact_duplicates_dropped"] > 0 and plan.stats["near_duplicate_clusters"] > 0
    split_of = {i: s for s, q in plan.queues.items() for i in q}
    by_cluster: dict[int, set[str]] = {}
    for i, c in enumerate(plan.cluster):
        by_cluster.setdefault(c, set()).add(split_of[i])
    assert all(len(v) == 1 for v in by_cluster.values())
    assert sorted(i for q in plan.queues.values() for i in q) == list(range(len(plan.rows)))


def test_load_raw_labeled_unlabeled_and_errors(tmp_path):
    """Labeled files go through the data stage's record readers; text-only files are read as unlabeled."""
    (tmp_path / "r.csv").write_text("text,label\n$AAPL up,Bullish\nflat day,neutral\n", encoding="utf-8")
    rows = load_raw(tmp_path / "r.csv")
    assert [(r.label, r.tickers, r.source) for r in rows] == [("positive", ["AAPL"], "csv"), ("neutral", [], "csv")]
    (tmp_path / "u.csv").write_text("text\n$AAPL up\nflat day\n", encoding="utf-8")
    assert [(r.text, r.label) for r in load_raw(tmp_path / "u.csv")] == [("$AAPL up", None), ("flat day", None)]
    (tmp_path / "u.jsonl").write_text('{"id": "a", "text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    assert [(r.id, r.label) for r in load_raw(tmp_path / "u.jsonl")] == [("a", None), ("u-2", None)]
    from tickerpulse.data.formats import DataError

    (tmp_path / "bad.jsonl").write_text('{"text": "x", "label": "meh"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:1: unknown label 'meh'"):
        load_raw(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text('{"id": "a", "text": "  "}\n', encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl:1: 'text' must be a non-empty string"):
        load_raw(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError):
        load_raw(tmp_path / "missing.jsonl")


def test_fiqa_keeps_per_target_scores(shared_data):
    rows = load_raw(shared_data / "fiqa-sentiment" / "fiqa_task1.jsonl")
    assert all(r.source == "fiqa" and r.score is not None for r in rows)
    posts = [r for r in rows if r.target_gold()]
    assert posts and all(s is not None and -1 <= s <= 1 for r in posts for _, s in r.target_gold().values())
    # the question distill asks about a post is its annotated target, with that target's own gold
    for r in posts:
        q = r.questions()[0]
        assert q.target == next(iter(r.target_gold())) and (q.label, q.score) == r.target_gold()[q.target]
