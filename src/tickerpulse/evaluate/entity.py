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
`entity_intervals` gives each of the first three a 95% interval by resampling whole paragraphs (a paragraph's
targets share a text, so they are not independent draws): with ~50 conflict targets in ~20 paragraphs, one
target is 2 points and the interval is about +-12.

`entity_eval` runs labelers over FinEntity records asked BY NAME (prompts sentiment-v2/v3: `EvalItem.target` is the
entity name, `ticker` its symbol from the data or `resolve_target`) and writes entity.json. A model whose prompt
cannot show a name (its prompt writes no target, sentiment-v1) is asked `student_ticker(item)` instead.

Known limitation: a name mentioned twice in one paragraph with different gold labels asks an ambiguous
question ("sentiment toward NAME in TEXT"); `entity_items` leaves such names out and counts them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickerpulse.data.finentity import paragraph_id, target_records
from tickerpulse.data.records import Record
from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Labeler
from tickerpulse.evaluate.runner import run_labeler
from tickerpulse.task.contract import DEFAULT_PROMPT, build_messages, load_prompt, resolve_target
from tickerpulse.task.metrics import accuracy, bootstrap_interval, macro_f1
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
    """(items, ambiguous names left out): each distinct target name of each paragraph once, in order
    (`data.finentity.target_records`, the questions the recipe trains on, read back as items).

    A record id seen before (the same paragraph repeated in the file) adds nothing.
    """
    recs, ambiguous = target_records(list(records))
    return [EntityItem(paragraph_id(r.id), r.text, r.targets[0].target, r.targets[0].ticker, r.targets[0].label)
            for r in recs], ambiguous


def student_ticker(item: EntityItem) -> str | None:
    """What a sentiment-v1 prompt can ask about for this target (its `Ticker:` slot takes a symbol or none): the
    target's symbol when known, else the name upper-cased when it is one word the answer schema accepts as a
    ticker (`Tesla` -> TESLA), else None (the market: every such target of a paragraph gets one answer)."""
    if item.ticker:
        return item.ticker
    word = item.target.strip().upper()
    return word if " " not in word and valid_symbol(word) else None


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _by_paragraph(paragraphs: Sequence[str]) -> list[list[int]]:
    """Item indexes per paragraph, paragraphs in first-seen order."""
    members: dict[str, list[int]] = {}
    for i, p in enumerate(paragraphs):
        members.setdefault(p, []).append(i)
    return list(members.values())


def entity_metrics(paragraphs: Sequence[str], targets: Sequence[str], gold: Sequence[str],
                   pred: Sequence[str]) -> dict[str, Any]:
    """Entity-level metrics of predictions (the module docstring's definitions).

    Args:
        paragraphs, targets: which paragraph and which target each item asks about.
        gold, pred: the item's gold and predicted labels.

    Returns:
        {targets, paragraphs, accuracy, macro_f1, conflict_paragraphs, conflict_targets, conflict_accuracy,
        told_apart, told_apart_paragraphs (the count behind told_apart), pairs, pairs_told_apart}; a rate with nothing to measure (no conflicting paragraph) is None.

    Raises:
        ValueError: lists of different lengths, or one (paragraph, target) twice.
    """
    n = len(paragraphs)
    if not len(targets) == len(gold) == len(pred) == n:
        raise ValueError(f"{n} paragraphs, {len(targets)} targets, {len(gold)} gold labels, {len(pred)} predictions")
    if len(set(zip(paragraphs, targets))) != n:
        raise ValueError("a (paragraph, target) pair occurs twice: each target is one item")
    units = _by_paragraph(paragraphs)
    conflict = [idx for idx in units if len({gold[i] for i in idx}) > 1]
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
        "paragraphs": len(units),
        "accuracy": accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred),
        "conflict_paragraphs": len(conflict),
        "conflict_targets": len(conflict_items),
        "conflict_accuracy": (accuracy([gold[i] for i in conflict_items], [pred[i] for i in conflict_items])
                              if conflict_items else None),
        "told_apart": apart / len(conflict) if conflict else None,
        "told_apart_paragraphs": apart,
        "pairs": pairs,
        "pairs_told_apart": told / pairs if pairs else None,
    }


def entity_intervals(paragraphs: Sequence[str], gold: Sequence[str], pred: Sequence[str], *, draws: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, list[float] | None]:
    """{accuracy, conflict_accuracy, told_apart: [low, high] or None}: percentile intervals over resampled
    paragraphs (`task.metrics.bootstrap_interval`), the same draws for all three."""
    units = _by_paragraph(paragraphs)
    size = [len(idx) for idx in units]
    right = [sum(gold[i] == pred[i] for i in idx) for idx in units]
    conflict = [int(len({gold[i] for i in idx}) > 1) for idx in units]
    apart = [int(len({pred[i] for i in idx}) > 1) for idx in units]

    def ratio(num: Sequence[int], den: Sequence[int]) -> Callable[[Sequence[int]], float | None]:
        def stat(draw: Sequence[int]) -> float | None:
            d = sum(den[j] for j in draw)
            return sum(num[j] for j in draw) / d if d else None
        return stat

    stats = {"accuracy": ratio(right, size),
             "conflict_accuracy": ratio([r * c for r, c in zip(right, conflict)],
                                        [n * c for n, c in zip(size, conflict)]),
             "told_apart": ratio([a * c for a, c in zip(apart, conflict)], conflict)}
    return {key: bootstrap_interval(len(units), stat, draws=draws, seed=seed, level=level)
            for key, stat in stats.items()}


# ------------------------------------------------------------------------------------------------ evaluation
def asks_by_name(prompt_version: str) -> bool:
    """Whether a prompt shows the target as written (names included): one whose answers carry the target."""
    return bool(load_prompt(prompt_version)["answer_target"])


def entity_eval_items(items: Sequence[EntityItem], prompt_version: str = DEFAULT_PROMPT) -> list[EvalItem]:
    """Evaluation items for entity questions: asked by name (`target` = the name, `ticker` = the data's symbol
    or the name's from `resolve_target`) under a prompt that shows names; under one that does not (sentiment-v1)
    asked `student_ticker(item)`. Ids are "<paragraph>#<k>" in item order."""
    by_name = asks_by_name(prompt_version)
    out = []
    for k, it in enumerate(items):
        if by_name:
            target, ticker = it.target, it.ticker or resolve_target(it.target)[1]
        else:
            target = ticker = student_ticker(it)
        out.append(EvalItem(id=f"{it.paragraph}#{k}", messages=build_messages(it.text, target, prompt_version),
                            gold_label=it.gold, ticker=ticker, target=target, text=it.text,
                            extra={"paragraph": it.paragraph, "entity": it.target}))
    return out


def asked_as(items: Sequence[EvalItem]) -> dict[str, int]:
    """How the items ask: by name, by symbol, or about the market (none)."""
    return dict(Counter("none (market)" if it.target is None else "name" if it.target != it.ticker else "symbol"
                        for it in items))


def entity_eval(labelers: Sequence[Labeler], records: Iterable[Record], out_dir: str | Path, *,
                prompt_version: str = DEFAULT_PROMPT, data_info: dict[str, Any] | None = None,
                earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every labeler on the entity questions of `records` (FinEntity test paragraphs); writes
    `out_dir/entity.json` and returns what it wrote.

    Args:
        labelers: e.g. student fast, the previous student, TF-IDF + LR, VADER, majority class. A labeler whose
            `system["prompt_version"]` names a prompt is asked under that prompt (a sentiment-v1 student:
            `student_ticker`); the others under `prompt_version` (label-only baselines ignore the prompt and
            see the paragraph only: they are target-blind, which is the point of the comparison).
        records: FinEntity records with their annotated targets.
        data_info: what the records are (file, split), stored under "data".
        earlier: an earlier `entity_eval` result on the same items (e.g. the model a run replaces, measured
            before it was overwritten): its systems and labels are added; ignored when its items differ.

    Returns:
        {"targets", "paragraphs", "ambiguous_names_left_out", "data", "notes", "systems": {name:
        {**entity_metrics(...), "ci95": entity_intervals(...), "prompt_version", "asked_as": {name|symbol|none
        (market): n}}}, "items": per
        target its paragraph, name, ticker, gold and each system's label}.

    Raises:
        ValueError: no records with targets.
    """
    ents, ambiguous = entity_items(records)
    if not ents:
        raise ValueError("no entity targets in the records: entity_eval needs FinEntity records with targets")
    cache: dict[str, list[EvalItem]] = {}
    systems: dict[str, dict[str, Any]] = {}
    preds: dict[str, list[str]] = {}
    paragraphs, names, gold = [e.paragraph for e in ents], [e.target for e in ents], [e.gold for e in ents]
    for labeler in labelers:
        version = str(labeler.system.get("prompt_version") or prompt_version)
        items = cache.setdefault(version, entity_eval_items(ents, version))
        res = run_labeler(labeler, items, "sentiment", data_info=data_info or {})
        labels = [rec.label or "invalid" for rec in res.items]
        preds[labeler.name] = labels
        m = entity_metrics(paragraphs, names, gold, labels)
        systems[labeler.name] = {**m, "ci95": entity_intervals(paragraphs, gold, labels), "prompt_version": version,
                                 "asked_as": asked_as(items)}
    out = {"targets": len(ents), "paragraphs": len(set(paragraphs)), "ambiguous_names_left_out": ambiguous,
           "data": data_info or {}, "systems": systems,
           "notes": ["Each distinct entity of a paragraph is one question, asked by name under a prompt that "
                     "shows names; a model whose prompt cannot (sentiment-v1) is asked the name's symbol or "
                     "the market. Label-only baselines see the paragraph only (target-blind)."],
           "items": [{"paragraph": e.paragraph, "target": e.target, "ticker": it.ticker, "gold": e.gold,
                      **{name: p[k] for name, p in preds.items()}}
                     for k, (e, it) in enumerate(zip(ents, entity_eval_items(ents, prompt_version)))]}
    if earlier and _same_items(earlier, out):
        for name in set(earlier["systems"]) - set(systems):
            out["systems"][name] = earlier["systems"][name]
            for item, old in zip(out["items"], earlier["items"]):
                item[name] = old[name]
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entity.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return out


def _same_items(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two entity results ask the same (paragraph, target) questions in the same order."""
    return [(i["paragraph"], i["target"]) for i in a["items"]] == [(i["paragraph"], i["target"]) for i in b["items"]]
