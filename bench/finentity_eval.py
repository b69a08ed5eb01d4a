#!/usr/bin/env python
"""Entity-level sentiment on our FinEntity test split (issue #28): do the systems answer about the target?

Split: `data.finentity.split_paragraphs` (by paragraph, stratified by paragraph kind, seed 0, valid 0.1,
test 0.2) of ../shared/data/finentity/finentity.jsonl; items: `evaluate.entity.entity_items` (each distinct
entity of a paragraph once; names with two gold labels in one paragraph left out). Systems:
- majority class (the most frequent target label of our train split);
- VADER and TF-IDF + LR (fitted on the train split's items: the paragraph text with each target's label):
  they see the paragraph only, never the target, which is the point;
- `student` (when installed; `tickerpulse models path tickerpulse-sentiment`): `SentimentEngine` fast mode,
  asked through `evaluate.entity.entity_eval_items` under the model's prompt (`engine.prompt_version`): by
  name under sentiment-v2; a sentiment-v1 model cannot see names and is asked `student_ticker(item)` (the
  symbol from a US Reuters RIC, else the one-word name upper-cased, else none: the market). The JSON records
  the prompt version and counts each kind of question.
Metrics: `evaluate.entity.entity_metrics` (accuracy, conflict accuracy, told apart), each with its 95% interval
over resampled paragraphs (`entity_intervals`, printed below the table).

    python bench/finentity_eval.py                         # baselines + majority; student if installed
    python bench/finentity_eval.py --systems student --threads 2
    python bench/finentity_eval.py --sizes-only            # the split sizes docs/data.md quotes
Writes bench/results/finentity_eval.json (merging systems measured by earlier runs of the same split) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from tickerpulse.data.finentity import finentity_sizes, split_paragraphs
from tickerpulse.data.readers import read_records
from tickerpulse.evaluate.entity import (EntityItem, asked_as, entity_eval_items, entity_intervals, entity_items,
                                         entity_metrics)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "finentity" / "finentity.jsonl"
OUT = ROOT / "bench" / "results" / "finentity_eval.json"
SYSTEMS = ("majority", "vader", "tfidf", "student")


def baselines(train: list[EntityItem], test: list[EntityItem], names: set[str], seed: int) -> dict[str, list[str]]:
    """Labels per test item of the target-blind baselines in `names`."""
    from tickerpulse.evaluate.baselines import TfidfLR, majority, vader

    texts = [it.text for it in test]
    out: dict[str, list[str]] = {}
    if "majority" in names:
        out["majority class"] = majority([it.gold for it in train], texts)[0]
    if "vader" in names:
        out["VADER"] = vader(texts)[0]
    if "tfidf" in names:
        out["TF-IDF + LR"] = TfidfLR(seed).fit([it.text for it in train], [it.gold for it in train]).predict(texts)[0]
    return out


def student(test: list[EntityItem], model: str, threads: int | None) -> tuple[list[str], dict[str, Any]] | None:
    """Fast-mode labels of the installed student, or None when it is not installed. Asked by name when its
    prompt shows names (sentiment-v2), else the sentiment-v1 stopgap `student_ticker`."""
    from tickerpulse.models.registry import named_model_dir
    from tickerpulse.serve.engine import SentimentEngine

    folder = Path(model) if Path(model).is_dir() else named_model_dir(model)
    if not folder.is_dir():
        print(f"student: {model} is not installed ({folder}); skipped")
        return None
    engine = SentimentEngine(str(folder), threads=threads)
    items = entity_eval_items(test, engine.prompt_version)
    answers = engine.analyze([(it.text, it.target) for it in items], mode="fast")
    return [a["sentiment"] for a in answers], {"model": str(folder), "mode": "fast",
                                               "prompt_version": engine.prompt_version, "asked_as": asked_as(items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--systems", default="majority,vader,tfidf,student",
                    help=f"comma-separated, of {', '.join(SYSTEMS)}")
    ap.add_argument("--model", default="tickerpulse-sentiment", help="the student: installed name or folder")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the student")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes-only", action="store_true", help="print the split sizes and stop")
    args = ap.parse_args()
    names = {s.strip() for s in args.systems.split(",") if s.strip()}
    if names - set(SYSTEMS):
        ap.error(f"unknown systems {sorted(names - set(SYSTEMS))}; choose from {', '.join(SYSTEMS)}")

    splits = split_paragraphs(read_records(args.data, "finentity"), seed=args.seed)
    sizes = finentity_sizes(splits)
    for name, s in sizes.items():
        print(f"{name:5s} {s['paragraphs']:4d} paragraphs {s['targets']:5d} targets  kinds {s['kinds']}  "
              f"labels {s['target_labels']}")
    if args.sizes_only:
        return
    train, _ = entity_items(splits["train"])
    test, ambiguous = entity_items(splits["test"])

    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    same_split = previous.get("split", {}).get("seed") == args.seed and previous.get("test_items") == len(test)
    results: dict[str, Any] = previous.get("systems", {}) if same_split else {}
    timed: dict[str, tuple[list[str], dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for system, labels in baselines(train, test, names, args.seed).items():
        timed[system] = (labels, {"target_blind": True})
    base_s = round(time.perf_counter() - t0, 1) if timed else previous.get("baselines_seconds")
    if "student" in names:
        t0 = time.perf_counter()
        got = student(test, args.model, args.threads)
        if got is not None:
            timed["student (fast)"] = (got[0], {**got[1], "seconds_with_load": round(time.perf_counter() - t0, 1)})
    for system, (labels, info) in timed.items():
        paragraphs, gold = [it.paragraph for it in test], [it.gold for it in test]
        m = entity_metrics(paragraphs, [it.target for it in test], gold, labels)
        ci = {k: None if iv is None else [round(v, 4) for v in iv] for k, iv in entity_intervals(paragraphs, gold, labels).items()}
        results[system] = {**{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}, "ci95": ci, **info}

    out = {"machine": platform.platform(), "python": platform.python_version(), "data": str(args.data),
           "split": {"seed": args.seed, "valid": 0.1, "test": 0.2, "sizes": sizes}, "test_items": len(test),
           "ambiguous_names_left_out": ambiguous, "baselines_seconds": base_s, "systems": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\ntest split: {len(test)} targets in {sizes['test']['paragraphs']} paragraphs "
          f"({ambiguous} ambiguous names left out)")
    heads = ("accuracy", "macro-F1", "conflict acc", "told apart", "pairs apart")
    print(f"{'system':16s} " + " ".join(f"{h:>12s}" for h in heads))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for system, r in results.items():
        keys = ("accuracy", "macro_f1", "conflict_accuracy", "told_apart", "pairs_told_apart")
        print(f"{system:16s} " + " ".join(f"{fmt(r[k]):>12s}" for k in keys))
    print("95% intervals over resampled paragraphs (accuracy / conflict accuracy / told apart):")
    for system, r in results.items():
        ci = r.get("ci95") or {}
        print(f"  {system:16s} " + " / ".join("-" if not ci.get(k) else f"{ci[k][0]:.3f}-{ci[k][1]:.3f}"
                                              for k in ("accuracy", "conflict_accuracy", "told_apart")))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
