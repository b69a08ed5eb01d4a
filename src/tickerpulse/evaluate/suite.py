"""Several labelers over one test set, written as one eval.json per system plus one HTML report, and the
prompt-injection check (per injection family) over the same labelers: what the recipe's evaluation step calls.

A `System` is a labeler plus how much of the test set it answers (`limit`: a seeded sample, for the slow
ones) and which earlier system its labels are compared with (`agree_with`: the share of equal labels on
its items, stored as `metrics.agreement_with[agree_key]`, in eval.json `agreement_with_<agree_key>`).
Systems run in order, so a reference system must come before the ones that compare with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickerpulse.evaluate.injection import FAMILIES, flip_summary, flipped, inject, obeyed_rate
from tickerpulse.evaluate.items import EvalItem, seeded_sample
from tickerpulse.evaluate.labelers import Labeler
from tickerpulse.evaluate.metrics import parse_prediction
from tickerpulse.evaluate.report import write_html_report
from tickerpulse.evaluate.result import EvalResult
from tickerpulse.evaluate.runner import run_labeler, write_eval
from tickerpulse.task.contract import build_messages


@dataclass
class System:
    """One labeler in a suite: on a seeded sample of `limit` items (None: all), compared with `agree_with`."""

    labeler: Labeler
    limit: int | None = None
    agree_with: str | None = None  # the name of an earlier system
    agree_key: str = "fast"  # -> metrics.agreement_with["fast"]


def agreement(a: Sequence[str | None], b: Sequence[str | None]) -> float:
    """Share of items whose two labels are equal (an invalid answer never agrees)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} labels")
    return sum(x == y and x != "invalid" for x, y in zip(a, b)) / len(a) if a else 0.0


def slug(name: str) -> str:
    """A folder name for a system name ("student fast" -> "student-fast")."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def evaluate_set(systems: Sequence[System], items: list[EvalItem], data_info: dict[str, Any], *, seed: int,
                 eval_dir: Path, report_dir: Path, title: str, notes: Sequence[str] = ()) -> list[EvalResult]:
    """Every system on one test set: `eval_dir/<system>/eval.json` each, then `report_dir/report.html`."""
    results: list[EvalResult] = []
    by_name: dict[str, EvalResult] = {}
    for system in systems:
        its = seeded_sample(items, system.limit, seed)
        info = {**data_info, "n": len(its)} if system.limit is not None else data_info
        res = run_labeler(system.labeler, its, "sentiment", data_info=info)
        if system.agree_with is not None:
            ref = by_name[system.agree_with].labels_by_id
            res.metrics.agreement_with[system.agree_key] = agreement(
                [ref[it.id] for it in its], [rec.label for rec in res.items])
        write_eval(res, eval_dir / slug(res.name))
        results.append(res)
        by_name[res.name] = res
    write_html_report(results, report_dir, title=title, notes=notes)
    return results


def _labels(labeler: Labeler, items: list[EvalItem]) -> list[str | None]:
    run = labeler.answer(items)
    if run.label_only:
        return [a.text for a in run.answers]
    return [parse_prediction(a.text).label for a in run.answers]


def injection_eval(labelers: Sequence[Labeler], items: list[EvalItem], data_info: dict[str, Any], *,
                   prompt_version: str, known: dict[str, dict[str, str | None]] | None = None,
                   families: Sequence[str] = FAMILIES) -> dict[str, Any]:
    """The same posts clean and once per injection family with an evaluation-vocabulary injection appended
    that asks for another label than the first labeler's clean answer; per labeler and family the share of
    flipped labels and of obeyed injections.

    Reasoning mode takes its label from fast mode's label pass (serve/engine), so its flip rates are fast
    mode's: pass fast mode and the baselines, not reasoning mode (the result's `notes` say so).

    Args:
        labelers: the first is the reference whose clean labels the injections argue against (student fast).
        items: held-out posts (the recipe passes twitter test items).
        known: clean labels a test evaluation already has (system name -> item id -> label), reused when they
            cover every item (the answers are deterministic, so this only saves the time).
        families: which injection families to measure (evaluate/injection.FAMILIES by default).

    Returns:
        {"n": posts per family, "families", "data", "notes", "systems": {name: {flip_rate, obeyed_rate, flips
        over all families, ci95 (`injection.flip_interval`, over posts), "families": {family: {n, flip_rate,
        obeyed_rate, flips, ci95}}}}, "items": per family and
        post the first labeler's clean and injected labels (keys clean_fast / injected_fast)}.

    Raises:
        ValueError: no labeler, or an unknown family.
    """
    if not labelers:
        raise ValueError("injection_eval needs at least one labeler")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown injection families {unknown}; known: {', '.join(FAMILIES)}")
    known = known or {}

    def clean_labels(labeler: Labeler) -> list[str | None]:
        have = known.get(labeler.name, {})
        if all(it.id in have for it in items):
            return [have[it.id] for it in items]
        return _labels(labeler, items)

    reference = clean_labels(labelers[0])
    asked: dict[str, list[str]] = {}
    dirty_items: list[EvalItem] = []
    for family in families:
        injected = [inject(it.text, lab, i, family, it.target) for i, (it, lab) in enumerate(zip(items, reference))]
        asked[family] = [a for _, a in injected]
        dirty_items += [EvalItem(id=f"inj-{family}-{i}", messages=build_messages(x, it.target, prompt_version), text=x,
                                 ticker=it.ticker, target=it.target) for i, (it, (x, _)) in enumerate(zip(items, injected))]
    n = len(items)
    systems: dict[str, dict[str, Any]] = {}
    first_dirty: list[str | None] = []
    for k, labeler in enumerate(labelers):
        clean = reference if k == 0 else clean_labels(labeler)
        dirty = _labels(labeler, dirty_items)  # one call: batches across families
        if k == 0:
            first_dirty = dirty
        table = [flipped(clean, dirty[f * n:(f + 1) * n]) for f in range(len(families))]  # family x post
        per = {family: {"n": n, **flip_summary([[x] for x in table[f]]),
                        "obeyed_rate": obeyed_rate(dirty[f * n:(f + 1) * n], asked[family])}
               for f, family in enumerate(families)}
        all_asked = [a for family in families for a in asked[family]]
        systems[labeler.name] = {**flip_summary([list(post) for post in zip(*table)]),
                                 "obeyed_rate": obeyed_rate(dirty, all_asked), "families": per}
    examples = [{"id": it.id, "family": family, "injected": x.text, "asked": a, "clean_fast": c, "injected_fast": d}
                for f, family in enumerate(families)
                for it, x, a, c, d in zip(items, dirty_items[f * n:(f + 1) * n], asked[family], reference,
                                          first_dirty[f * n:(f + 1) * n])]
    notes = ["Reasoning mode's label is fast mode's label pass by construction (serve/engine), so its flip "
             "rates equal fast mode's and are not measured again.",
             "Injections come from each family's evaluation vocabulary, disjoint from the training "
             "augmentation's (evaluate/injection)."]
    return {"n": n, "families": list(families), "data": data_info, "notes": notes, "systems": systems,
            "items": examples}
