"""Our own train/valid/test of FinEntity, by paragraph: the shared file has no splits of its own.

`split_paragraphs` deals whole paragraphs with the one splitter (`data.split.split_groups`): a paragraph and
its exact duplicates (the file repeats 8 rows) always land in one split, so no target of a valid/test
paragraph is ever trained on. The strata are the paragraph's kind, so each split gets its share of the rare
paragraphs the entity metrics need most: `conflict` (its targets carry different gold labels: 105 of 778)
or else the one label all its targets share.

Sizes with the defaults (seed 0, valid 0.1, test 0.2) on the shared file: `finentity_sizes` and
docs/data.md (reproduced by `python bench/finentity_eval.py --sizes-only`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tickerpulse.data.records import Record, Target
from tickerpulse.data.split import group_keys, split_groups

SPLIT_ORDER = ("train", "valid", "test")


def paragraph_kind(rec: Record) -> str:
    """`conflict` when the record's targets differ in gold label, else its targets' label (the record's own
    label when it annotates no target)."""
    labels = {t.label for t in rec.targets} or {rec.label or ""}
    return "conflict" if len(labels) > 1 else labels.pop()


def split_paragraphs(records: Sequence[Record], valid: float = 0.1, test: float = 0.2,
                     seed: int = 0) -> dict[str, list[Record]]:
    """Records dealt to train/valid/test by paragraph, stratified by `paragraph_kind`, seeded.

    Args:
        records: FinEntity records (`read_records(path, "finentity")`), one per paragraph.
        valid, test: shares of the paragraphs (each in [0, 1), together < 1).
        seed: the same records and seed give the same split.

    Returns:
        {"train", "valid", "test"} -> records in input order.

    Raises:
        ValueError: fractions out of range.
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"valid {valid} and test {test} must be in [0, 1) and sum to less than 1")
    keys = group_keys([r.text for r in records])
    parts = split_groups(keys, [paragraph_kind(r) for r in records], {"test": test, "valid": valid}, seed,
                         rest="train")
    return {s: [records[i] for i in sorted(parts[s])] for s in SPLIT_ORDER}


def paragraph_id(question_id: str) -> str:
    """The paragraph a `target_records` question (`<paragraph id>#<k>`, an injected copy's `...#<k>:inj-<family>`
    too) comes from; `#` may occur in a paragraph id itself, so the last one splits."""
    return question_id.rpartition("#")[0]


def target_records(records: Sequence[Record]) -> tuple[list[Record], int]:
    """(one record per distinct target of each paragraph, ambiguous names left out): each asks about its one
    target by name (`targets` = that target, `label` its gold), id `<paragraph id>#<k>`; a paragraph id seen
    before adds nothing. A name annotated twice in a paragraph with different labels asks an ambiguous
    question and is left out (counted)."""
    out: list[Record] = []
    ambiguous = 0
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            continue
        seen.add(rec.id)
        by_name: dict[str, list[Target]] = {}
        for t in rec.targets:
            by_name.setdefault(t.target, []).append(t)
        for k, (name, ts) in enumerate(by_name.items()):
            if len({t.label for t in ts}) > 1:
                ambiguous += 1
                continue
            first, ticker = ts[0], next((t.ticker for t in ts if t.ticker), None)  # a RIC after any mention
            out.append(Record(id=f"{rec.id}#{k}", text=rec.text, label=first.label, source=rec.source,
                              tickers=[ticker] if ticker else [], dataset=rec.dataset,
                              targets=[Target(target=name, score=first.score, ticker=ticker, label=first.label)]))
    return out, ambiguous


def finentity_sizes(splits: dict[str, list[Record]]) -> dict[str, dict[str, Any]]:
    """Per split: paragraphs (distinct ids), targets (mentions), paragraphs by kind, target labels."""
    out: dict[str, dict[str, Any]] = {}
    for name, recs in splits.items():
        uniq = list({r.id: r for r in recs}.values())
        out[name] = {"rows": len(recs), "paragraphs": len(uniq), "targets": sum(len(r.targets) for r in uniq),
                     "kinds": dict(sorted(Counter(paragraph_kind(r) for r in uniq).items())),
                     "target_labels": dict(sorted(Counter(t.label for r in uniq for t in r.targets).items()))}
    return out
