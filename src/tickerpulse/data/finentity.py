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

from tickerpulse.data.records import Record
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


def finentity_sizes(splits: dict[str, list[Record]]) -> dict[str, dict[str, Any]]:
    """Per split: paragraphs (distinct ids), targets (mentions), paragraphs by kind, target labels."""
    out: dict[str, dict[str, Any]] = {}
    for name, recs in splits.items():
        uniq = list({r.id: r for r in recs}.values())
        out[name] = {"rows": len(recs), "paragraphs": len(uniq), "targets": sum(len(r.targets) for r in uniq),
                     "kinds": dict(sorted(Counter(paragraph_kind(r) for r in uniq).items())),
                     "target_labels": dict(sorted(Counter(t.label for r in uniq for t in r.targets).items()))}
    return out
