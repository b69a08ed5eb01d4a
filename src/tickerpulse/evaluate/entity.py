"""Entity-level evaluation: is the answer about the target, or about the whole paragraph?

An item is one (paragraph, target) with the target's gold label (`entity_items`: FinEntity records, each
distinct entity name of a paragraph once). The metrics are pure functions over parallel lists
(`entity_metrics`), checked by hand in tests/evaluate/test_entity.py:

- accuracy (and macro-F1) over all targets;
- conflict accuracy: accuracy over the targets of paragraphs whose targets carry different gold labels
  (a system that labels the paragraph and copies it to each target cannot get all of them right);
- told apart: the share of those conflicting paragraphs where the predicted labels differ too (not all the
  same); `pairs_told_apart` is the same per pair of targets with different gold labels.
A prediction that is no label ("invalid") is wrong and counts as one more label value.

Known limitation: a name mentioned twice in one paragraph with different gold labels asks an ambiguous
question ("sentiment toward NAME in TEXT"); `entity_items` leaves such names out and counts them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tickerpulse.data.records import Record
from tickerpulse.task.metrics import accuracy, macro_f1
from tickerpulse.task.questions import valid_symbol


@dataclass(frozen=True)
class EntityItem:
    """One question "sentiment toward `target` in the paragraph", with its gold label."""

    paragraph: str  # the record id
    text: str
    target: str  # the entity name as written
    ticker: str | None  # its symbol when the data gives one
    gold: str


def entity_items(records: Iterable[Record]) -> tuple[list[EntityItem], int]:
    """(items, ambiguous names left out): each distinct target name of each paragraph once, in order.

    A record id seen before (the same paragraph repeated in the file) adds nothing.
    """
    items: list[EntityItem] = []
    ambiguous = 0
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            continue
        seen.add(rec.id)
        labels: dict[str, set[str]] = {}
        tickers: dict[str, str | None] = {}
        for t in rec.targets:
            labels.setdefault(t.target, set()).add(t.label)
            tickers[t.target] = tickers.get(t.target) or t.ticker
        for name, gold in labels.items():
            if len(gold) > 1:
                ambiguous += 1
                continue
            items.append(EntityItem(rec.id, rec.text, name, tickers[name], next(iter(gold))))
    return items, ambiguous


def student_ticker(item: EntityItem) -> str | None:
    """What today's prompt can ask about for this target (its `Ticker:` slot takes a symbol or none): the
    target's symbol when known, else the name upper-cased when it is one word the answer schema accepts as a
    ticker (`Tesla` -> TESLA), else None (the market: every such target of a paragraph gets one answer)."""
    if item.ticker:
        return item.ticker
    word = item.target.strip().upper()
    return word if " " not in word and valid_symbol(word) else None


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def entity_metrics(paragraphs: Sequence[str], targets: Sequence[str], gold: Sequence[str],
                   pred: Sequence[str]) -> dict[str, Any]:
    """Entity-level metrics of predictions (the module docstring's definitions).

    Args:
        paragraphs, targets: which paragraph and which target each item asks about.
        gold, pred: the item's gold and predicted labels.

    Returns:
        {targets, paragraphs, accuracy, macro_f1, conflict_paragraphs, conflict_targets, conflict_accuracy,
        told_apart, pairs, pairs_told_apart}; a rate with nothing to measure (no conflicting paragraph) is None.

    Raises:
        ValueError: lists of different lengths, or one (paragraph, target) twice.
    """
    n = len(paragraphs)
    if not len(targets) == len(gold) == len(pred) == n:
        raise ValueError(f"{n} paragraphs, {len(targets)} targets, {len(gold)} gold labels, {len(pred)} predictions")
    if len(set(zip(paragraphs, targets))) != n:
        raise ValueError("a (paragraph, target) pair occurs twice: each target is one item")
    members: dict[str, list[int]] = {}
    for i, p in enumerate(paragraphs):
        members.setdefault(p, []).append(i)
    conflict = [idx for idx in members.values() if len({gold[i] for i in idx}) > 1]
    conflict_items = [i for idx in conflict for i in idx]
    apart = sum(len({pred[i] for i in idx}) > 1 for idx in conflict)
    pairs = told = 0
    for idx in conflict:
        # pairs with different gold = all pairs - same-gold pairs; of those, the ones predicted alike are
        # same-pred pairs - same-(gold, pred) pairs: counted in O(n), a huge paragraph is no quadratic loop
        diff_gold = _pairs(len(idx)) - sum(_pairs(c) for c in Counter(gold[i] for i in idx).values())
        same_pred = (sum(_pairs(c) for c in Counter(pred[i] for i in idx).values())
                     - sum(_pairs(c) for c in Counter((gold[i], pred[i]) for i in idx).values()))
        pairs += diff_gold
        told += diff_gold - same_pred
    return {
        "targets": n,
        "paragraphs": len(members),
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred),
        "conflict_paragraphs": len(conflict),
        "conflict_targets": len(conflict_items),
        "conflict_accuracy": (accuracy([gold[i] for i in conflict_items], [pred[i] for i in conflict_items])
                              if conflict_items else None),
        "told_apart": apart / len(conflict) if conflict else None,
        "pairs": pairs,
        "pairs_told_apart": told / pairs if pairs else None,
    }
