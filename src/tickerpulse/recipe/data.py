"""Dataset assembly: the three shared files -> seeded, stratified train / valid / test record files.

- twitter-financial-news-sentiment: `train.jsonl` -> our train + our own validation (carved from train);
  `valid-a.jsonl` is the TEST set (never trained or early-stopped on).
- Financial PhraseBank all-agree and FiQA task 1: one file each -> train / valid / test by fraction.

Rows whose normalised text is identical (same headline, another t.co link) form one group and a group never
straddles two splits, so no test text is a training text. Each split is stratified by label. The question a
row asks is the one distill asks (`distill.job`): the first ticker the project's extractor finds, and for FiQA
that target's own annotated score. Output rows are labeled records `{id, text, label, score?, tickers,
source, dataset}` that both `tickerpulse distill` and `tickerpulse eval` read.

Known limitation: near-duplicates (paraphrases) are not grouped here; only exact normalised duplicates.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickerpulse.task.contract import TICKER_RE, score_to_label
from tickerpulse.data.split import normalize_text
from tickerpulse.distill.inputs import RawRow, load_raw
from tickerpulse.recipe.config import SplitConfig
from tickerpulse.task.tickers import extract_tickers

SOURCES = {
    "tfns": "twitter-financial-news-sentiment/train.jsonl",
    "tfns_test": "twitter-financial-news-sentiment/valid-a.jsonl",
    "fpb": "financial-phrasebank/sentences_allagree.jsonl",
    "fiqa": "fiqa-sentiment/fiqa_task1.jsonl",
}
TEST_NAMES = {"tfns": "twitter valid-a", "fpb": "PhraseBank test", "fiqa": "FiQA test"}


@dataclass
class Row:
    """One (text, target) question with its gold judgement."""

    id: str
    text: str
    label: str
    score: float | None
    tickers: list[str]
    dataset: str
    source: str

    def to_record(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text, "label": self.label}
        if self.score is not None:
            d["score"] = self.score
        d.update({"tickers": self.tickers, "source": self.source, "dataset": self.dataset})
        return d


def to_row(raw: RawRow, dataset: str) -> Row:
    """The question distill asks about `raw` (first extracted ticker; FiQA: that target's own score)."""
    tickers = [t for t in extract_tickers(raw.text) if TICKER_RE.match(t)]
    target = tickers[0] if tickers else None
    label, score = raw.label, raw.score
    if target in raw.target_scores:
        score = raw.target_scores[target]
        label = score_to_label(score)
    if label is None:
        raise ValueError(f"{raw.id}: no gold label")
    return Row(raw.id, raw.text, label, score, tickers, dataset, raw.source)


def stratified_groups(rows: Sequence[Row], fractions: dict[str, float], seed: int,
                      counts: dict[str, int] | None = None) -> dict[str, list[Row]]:
    """Split rows into named parts, per label, keeping normalised-duplicate groups together.

    Args:
        fractions: part -> share of each label's groups (the remainder goes to "train").
        counts: part -> absolute number of rows instead (shared out over labels by their frequency).
    Returns:
        part -> rows, in the input order (deterministic for a seed).
    """
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(normalize_text(r.text) or r.id, []).append(i)
    by_label: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        by_label[rows[members[0]].label].append(members)
    part_of: dict[int, str] = {}
    rng = random.Random(seed)
    n_total = len(rows)
    for label in sorted(by_label):
        gs = by_label[label]
        rng.shuffle(gs)
        n_label = sum(len(g) for g in gs)
        cursor = 0
        for part in sorted(set(fractions) | set(counts or {})):
            want = (math.ceil(fractions[part] * n_label) if part in fractions
                    else round((counts or {})[part] * n_label / max(n_total, 1)))
            taken = 0
            while cursor < len(gs) and taken < want:
                for i in gs[cursor]:
                    part_of[i] = part
                taken += len(gs[cursor])
                cursor += 1
        for g in gs[cursor:]:
            for i in g:
                part_of[i] = "train"
    out: dict[str, list[Row]] = defaultdict(list)
    for i, r in enumerate(rows):
        out[part_of[i]].append(r)
    return dict(out)


def stratified_sample(rows: Sequence[Row], n: int | None, seed: int) -> list[Row]:
    """A seeded sample of `n` rows with each label's share kept (file order kept); all rows when n is None."""
    if n is None or n >= len(rows):
        return list(rows)
    parts = stratified_groups(rows, {"keep": n / len(rows)}, seed)
    keep = {id(r) for r in parts.get("keep", [])}
    return [r for r in rows if id(r) in keep][:n]


def _read(shared: Path, key: str, dataset: str, limit: int | None, seed: int) -> list[Row]:
    path = shared / SOURCES[key]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the recipe reads the public datasets from --shared-data")
    rows = [to_row(r, dataset) for r in load_raw(path)]
    return stratified_sample(rows, limit, seed)


def assemble(shared: Path, cfg: SplitConfig, seed: int) -> dict[str, dict[str, list[Row]]]:
    """dataset -> split (train/valid/test) -> rows. Training subsamples (`train_limit`) apply to train only."""
    lim = cfg.limit_per_dataset
    out: dict[str, dict[str, list[Row]]] = {}
    test = _read(shared, "tfns_test", "tfns", lim, seed)
    # valid-a is the benchmark as published: keep it whole and drop train rows that repeat a test text
    # (same headline with another link), so the student never trains on a test question.
    test_texts = {normalize_text(r.text) for r in test}
    tfns = [r for r in _read(shared, "tfns", "tfns", lim, seed) if normalize_text(r.text) not in test_texts]
    n_valid = min(cfg.tfns_valid, max(3, len(tfns) // 10)) if lim else cfg.tfns_valid
    parts = stratified_groups(tfns, {}, seed, counts={"valid": n_valid})
    out["tfns"] = {"train": parts.get("train", []), "valid": parts.get("valid", []), "test": test}
    for ds in ("fpb", "fiqa"):
        rows = _read(shared, ds, ds, lim, seed)
        p = stratified_groups(rows, {"test": cfg.test_fraction, "valid": cfg.valid_fraction}, seed)
        out[ds] = {s: p.get(s, []) for s in ("train", "valid", "test")}
    for ds, splits in out.items():
        splits["train"] = stratified_sample(splits["train"], cfg.train_limit.get(ds), seed)
        if cfg.valid_limit is not None:
            splits["valid"] = stratified_sample(splits["valid"], cfg.valid_limit, seed)
    return out


def write_records(rows: Sequence[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r.to_record(), ensure_ascii=False) + "\n")
    return path


def split_stats(data: dict[str, dict[str, list[Row]]]) -> dict[str, Any]:
    """Rows and label counts per dataset and split (for the card)."""
    stats: dict[str, Any] = {}
    for ds, splits in data.items():
        stats[ds] = {}
        for split, rows in splits.items():
            counts: dict[str, int] = defaultdict(int)
            for r in rows:
                counts[r.label] += 1
            stats[ds][split] = {"rows": len(rows), "labels": dict(sorted(counts.items()))}
    return stats
