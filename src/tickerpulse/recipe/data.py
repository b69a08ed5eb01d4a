"""Dataset assembly: the three shared files -> seeded, stratified train / valid / test record files.

- twitter-financial-news-sentiment: `train.jsonl` -> our train + our own validation (carved from train);
  `valid-a.jsonl` is the TEST set (never trained or early-stopped on).
- Financial PhraseBank all-agree and FiQA task 1: one file each -> train / valid / test by fraction.
- FinEntity: whole paragraphs -> train / valid / test by the same fractions (`data.finentity.split_paragraphs`);
  train and valid become one record per distinct entity, asked about by name (`target_records`); the test
  split stays one record per paragraph (the entity evaluation asks about each of its entities).
- pairs (`recipe.pairs`, train only): twitter train rows that name one target each, joined two by two and
  asked about each target; FinEntity train paragraphs joined two by two, asked about each of their entities;
  single-target twitter rows with a bystander clause (`recipe.bystanders`), asked about the target and the
  bystander.

Splits and samples come from the data stage's one splitter (`tickerpulse.data.split`): rows whose normalised
text is identical (same headline, another t.co link) form one group that never straddles two splits, and each
split is stratified by label. Each row becomes the record of the one question it asks (`Record.questions`,
the rule distill and eval use: the first symbol, FiQA's first annotated target with its own score), with that
question's gold as its label/score, the asked symbol first in `tickers` and the dataset name:
`{id, text, label, score?, tickers, targets?, source, dataset}`, which `tickerpulse distill` and
`tickerpulse eval` read.

Known limitation: near-duplicates (paraphrases) are not grouped here; only exact normalised duplicates.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tickerpulse.data.finentity import paragraph_id, paragraph_kind, split_paragraphs, target_records
from tickerpulse.data.readers import read_records
from tickerpulse.data.records import Record, write_jsonl
from tickerpulse.data.split import group_keys, normalize_text, sample, split_groups
from tickerpulse.recipe.bystanders import bystander_records
from tickerpulse.recipe.pairs import paragraph_pairs, target_pairs
from tickerpulse.recipe.renames import renamed_copies
from tickerpulse.recipe.config import ENTITY_DATASET, PAIRS, SplitConfig

SOURCES = {
    "tfns": "twitter-financial-news-sentiment/train.jsonl",
    "tfns_test": "twitter-financial-news-sentiment/valid-a.jsonl",
    "fpb": "financial-phrasebank/sentences_allagree.jsonl",
    "fiqa": "fiqa-sentiment/fiqa_task1.jsonl",
    "finentity": "finentity/finentity.jsonl",
}
TEST_NAMES = {"tfns": "twitter valid-a", "fpb": "PhraseBank test", "fiqa": "FiQA test", "finentity": "FinEntity test"}


def to_record(rec: Record, dataset: str) -> Record:
    """The record of the question `rec` asks, as every reader of the file sees it: its gold as label/score,
    the asked symbol first in `tickers` (none when it asks about the market or FiQA's named companies, which
    the kept `targets` tell `Record.questions`), and the dataset."""
    q = rec.questions()[0]
    if q.label is None:
        raise ValueError(f"{rec.id}: no gold label")
    tickers = [q.ticker, *(t for t in q.tickers if t != q.ticker)] if q.ticker else []
    return Record(id=rec.id, text=rec.text, label=q.label, source=rec.source, score=q.score, tickers=tickers,
                  targets=rec.targets, dataset=dataset)


def split_records(rows: Sequence[Record], fractions: Mapping[str, float], seed: int) -> dict[str, list[Record]]:
    """rows -> part -> rows in input order (`data.split.split_groups`; the remainder goes to "train")."""
    keys = group_keys([r.text for r in rows])
    parts = split_groups(keys, [r.label for r in rows], fractions, seed, rest="train")
    return {part: [rows[i] for i in sorted(idx)] for part, idx in parts.items()}


def sample_records(rows: Sequence[Record], n: int | None, seed: int) -> list[Record]:
    """A seeded sample of `n` rows with each label's share kept (file order kept); all rows when n is None."""
    return [rows[i] for i in sample(group_keys([r.text for r in rows]), [r.label for r in rows], n, seed)]


def _source(shared: Path, key: str) -> Path:
    """The shared file of a source; FileNotFoundError names it when it is missing."""
    path = shared / SOURCES[key]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the recipe reads the public datasets from --shared-data")
    return path


def _read(shared: Path, key: str, dataset: str, limit: int | None, seed: int) -> list[Record]:
    rows = [to_record(r, dataset) for r in read_records(_source(shared, key))]
    return sample_records(rows, limit, seed)


def assemble(shared: Path, cfg: SplitConfig, seed: int) -> dict[str, dict[str, list[Record]]]:
    """dataset -> split (train/valid/test) -> rows. Training subsamples (`train_limit`) apply to train only."""
    lim = cfg.limit_per_dataset
    out: dict[str, dict[str, list[Record]]] = {}
    test = _read(shared, "tfns_test", "tfns", lim, seed)
    # valid-a is the benchmark as published: keep it whole and drop train rows that repeat a test text
    # (same headline with another link), so the student never trains on a test question.
    test_texts = {normalize_text(r.text) for r in test}
    tfns = [r for r in _read(shared, "tfns", "tfns", lim, seed) if normalize_text(r.text) not in test_texts]
    n_valid = min(cfg.tfns_valid, max(3, len(tfns) // 10)) if lim else cfg.tfns_valid
    parts = split_records(tfns, {"valid": n_valid / len(tfns)}, seed)
    out["tfns"] = {"train": parts.get("train", []), "valid": parts.get("valid", []), "test": test}
    for ds in ("fpb", "fiqa"):
        rows = _read(shared, ds, ds, lim, seed)
        p = split_records(rows, {"test": cfg.test_fraction, "valid": cfg.valid_fraction}, seed)
        out[ds] = {s: p.get(s, []) for s in ("train", "valid", "test")}
    out[ENTITY_DATASET], entity_train = _finentity(shared, cfg, seed)
    for ds, splits in out.items():
        splits["train"] = sample_records(splits["train"], cfg.train_limit.get(ds), seed)
        if cfg.valid_limit is not None:
            splits["valid"] = sample_records(splits["valid"], cfg.valid_limit, seed)
    if cfg.pairs or cfg.paragraph_pairs or cfg.bystanders:
        out[PAIRS] = {"train": target_pairs(out["tfns"]["train"], cfg.pairs, seed, cfg.pair_conflict_share)
                      + paragraph_pairs(entity_train, cfg.paragraph_pairs, seed, cfg.pair_conflict_share)
                      + bystander_records(out["tfns"]["train"], cfg.bystanders, seed),
                      "valid": [], "test": []}
    return out


def _finentity(shared: Path, cfg: SplitConfig, seed: int) -> tuple[dict[str, list[Record]], list[Record]]:
    """FinEntity's splits by paragraph (train/valid as one record per entity, test as paragraphs) and the train
    paragraphs themselves."""
    paragraphs = [replace(r, dataset=ENTITY_DATASET) for r in read_records(_source(shared, ENTITY_DATASET), "finentity")]
    if cfg.limit_per_dataset:
        paragraphs = [paragraphs[i] for i in sorted(random.Random(seed).sample(
            range(len(paragraphs)), min(cfg.limit_per_dataset, len(paragraphs))))]
    parts = split_paragraphs(paragraphs, cfg.valid_fraction, cfg.test_fraction, seed)
    conflict = [p for p in parts["train"] if paragraph_kind(p) == "conflict"]
    renamed = renamed_copies(conflict, cfg.renamed_copies, seed)
    train = _cap_agreeing(target_records(parts["train"] + renamed)[0], cfg.agreeing_questions, seed)
    return {"train": train, "valid": target_records(parts["valid"])[0], "test": parts["test"]}, parts["train"]


def _cap_agreeing(questions: list[Record], cap: int | None, seed: int) -> list[Record]:
    """At most `cap` questions (a seeded choice, input order kept) from each paragraph whose several entities
    all carry one label; single-entity and conflicting paragraphs keep every question."""
    if cap is None:
        return questions
    by_paragraph: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_paragraph[paragraph_id(q.id)].append(i)
    rng, drop = random.Random(seed), set()
    for idx in by_paragraph.values():
        if len(idx) > cap and len({questions[i].label for i in idx}) == 1:
            drop.update(set(idx) - set(rng.sample(idx, cap)))
    return [q for i, q in enumerate(questions) if i not in drop]


def write_records(rows: Sequence[Record], path: Path) -> Path:
    write_jsonl((r.to_dict() for r in rows), path)
    return path


def read_data(folder: Path) -> dict[str, dict[str, list[Record]]]:
    """The record files `write_records` wrote (`<dataset>-<split>.jsonl`) back as dataset -> split -> rows."""
    from tickerpulse.data.formats import iter_jsonl

    data: dict[str, dict[str, list[Record]]] = {}
    for path in sorted(folder.glob("*-*.jsonl")):
        ds, split = path.stem.rsplit("-", 1)
        data.setdefault(ds, {})[split] = [Record.from_dict(row) for _, row in iter_jsonl(path)]
    if not data:
        raise FileNotFoundError(f"no record files in {folder}: run the whole recipe first")
    return data


def split_stats(data: dict[str, dict[str, list[Record]]]) -> dict[str, Any]:
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
