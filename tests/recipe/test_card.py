"""The card is computed from the eval outputs on disk: change an eval.json and the card follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Answer, LabelerRun
from tickerpulse.evaluate.runner import score_run, write_eval
from tickerpulse.recipe.card import FAST, REASON, TARGETS, build_card, card_markdown, fast_on_items, headline_markdown, load_evals
from tickerpulse.recipe.config import RecipeConfig

GOLD = ["positive", "negative", "neutral", "neutral", "positive"]
SCORES = [0.6, -0.5, 0.0, 0.05, 0.3]


def _items() -> list[EvalItem]:
    return [EvalItem(id=f"i{k}", messages=[], gold_label=g, gold_score=s, gold_tickers=[], text=f"post {k}")
            for k, (g, s) in enumerate(zip(GOLD, SCORES))]


def _answers(texts: list[str]) -> LabelerRun:
    return LabelerRun([Answer(t, latency=0.01) for t in texts], wall_s=0.05)


def _write_run(out: Path, fast_labels: list[str]) -> None:
    items = _items()
    for ds in ("tfns", "fpb", "fiqa"):
        vader = LabelerRun([Answer("positive", score=0.1) for _ in items], wall_s=0.01, label_only=True)
        write_eval(score_run("VADER", items, vader), out / "eval" / ds / "vader")
        texts = [json.dumps({"ticker": None, "sentiment": lab, "score": {"positive": 0.5, "negative": -0.5}.get(lab, 0.0),
                             "reasoning": ""}) for lab in fast_labels]
        write_eval(score_run(FAST, items, _answers(texts)), out / "eval" / ds / "student-fast")
    (out / "run").mkdir(parents=True)
    (out / "run" / "summary.json").write_text(json.dumps({"status": "finished", "tokens_per_sec": 321.0, "step": 10,
                                                           "total_steps": 10, "best_step": 10}))
    (out / "timings.json").write_text(json.dumps({"train": 60.0, "total_before_card": 120.0}))
    (out / "data").mkdir()
    (out / "data" / "stats.json").write_text(json.dumps({"tfns": {"train": {"rows": 5, "labels": {"neutral": 5}}}}))
    (out / "calibration.json").write_text(json.dumps({"temperature": 2.0, "objective": "score_mae", "value": 0.2, "n": 5}))
    (out / "injection.json").write_text(json.dumps({"n": 4, "systems": {FAST: {"flip_rate": 0.25, "obeyed_rate": 0.25, "flips": 1}}}))


def test_card_numbers_come_from_the_eval_files(tmp_path: Path) -> None:
    _write_run(tmp_path, ["positive", "negative", "neutral", "positive", "positive"])
    card = build_card(tmp_path, RecipeConfig())
    row = card["results"]["tfns"][FAST]
    assert row["accuracy"] == pytest.approx(4 / 5) and row["schema_valid"] == 1.0
    assert row["recall"]["neutral"] == pytest.approx(0.5)
    assert card["results"]["fiqa"][FAST]["score_mae"] == pytest.approx(sum(abs(a - b) for a, b in zip(SCORES, [0.5, -0.5, 0.0, 0.5, 0.5])) / 5)
    targets = {t["key"]: t for t in card["targets"][FAST]}
    assert targets["tfns_accuracy"]["value"] == pytest.approx(0.8)
    assert not targets["tfns_accuracy"]["met"] and targets["tfns_accuracy"]["miss_by"] == pytest.approx(0.08)
    assert targets["schema_valid"]["met"]
    assert targets["injection_flip"]["value"] == 0.25 and not targets["injection_flip"]["met"]
    assert card["train"]["tokens_per_sec"] == 321.0 and card["wall_time_s"] == 120.0
    # fast mode's numbers carry their interval over the test items (5 here: wide), the other columns none
    lo, hi = targets["tfns_accuracy"]["ci95"]
    assert 0.0 <= lo < 0.8 < hi == 1.0 and card["targets"][REASON][0].get("ci95") is None
    assert f"80.0% [{100 * lo:.1f}-100.0%] ❌ missed by 8.0 pt" in headline_markdown(card)
    # the item-level recomputation behind the intervals and the sampled columns gives the eval's own numbers
    evals = load_evals(tmp_path)
    for key, ds, metric, *_ in TARGETS:
        fast = evals[ds][FAST]
        assert fast_on_items(fast, {it.id for it in fast.items}, metric) == pytest.approx(targets[key]["value"])
    mae = targets["fiqa_mae"]
    assert mae["ci95"][0] <= mae["value"] <= mae["ci95"][1] and f"[{mae['ci95'][0]:.3f}-" in headline_markdown(card)
    assert "| student fast | 5 | 80.0% |" in card_markdown(card)

    # rewrite one eval output: the card follows (nothing is cached or copied)
    _write_run(tmp_path / "again", GOLD)
    card2 = build_card(tmp_path / "again", RecipeConfig())
    t2 = {t["key"]: t for t in card2["targets"][FAST]}
    assert t2["tfns_accuracy"]["value"] == 1.0 and t2["tfns_accuracy"]["met"] and t2["tfns_accuracy"]["miss_by"] == 0.0


def test_a_sampled_column_shows_fast_mode_on_the_same_items(tmp_path: Path) -> None:
    _write_run(tmp_path, ["positive", "negative", "neutral", "positive", "negative"])  # fast: 3 of 5 right
    sample = _items()[:2]  # the two items fast mode gets right: an easy sample
    texts = [json.dumps({"ticker": None, "sentiment": g, "score": s, "reasoning": ""})
             for g, s in zip(GOLD[:2], SCORES[:2])]
    for ds in ("tfns", "fpb", "fiqa"):
        write_eval(score_run(REASON, sample, _answers(texts), data={"n": 2}), tmp_path / "eval" / ds / "student-reasoning")
    card = build_card(tmp_path, RecipeConfig())
    t = {x["key"]: x for x in card["targets"][REASON]}
    assert t["tfns_accuracy"]["value"] == 1.0 and t["tfns_accuracy"]["fast_same_items"] == 1.0
    assert t["fiqa_mae"]["fast_same_items"] == pytest.approx((abs(0.6 - 0.5) + abs(-0.5 + 0.5)) / 2)
    assert "100.0% (n=2; fast mode on these items: 100.0%) ✅ met" in headline_markdown(card)


def test_small_miss_is_not_printed_as_zero() -> None:
    from tickerpulse.recipe.card import _fmt_target

    t = {"key": "tfns_macro_f1", "value": 0.8497, "met": False, "miss_by": 0.0003}
    assert _fmt_target(t).endswith("missed by 0.03 pt")
    assert _fmt_target({**t, "miss_by": 0.026}).endswith("missed by 2.6 pt")


def _entity_and_injection_files(out: Path) -> tuple[dict, dict]:
    """entity.json and injection.json written by the real evaluation functions with real (cheap) baselines."""
    from functools import partial

    from tickerpulse.data.records import Record, Target
    from tickerpulse.evaluate.baselines import majority, vader
    from tickerpulse.evaluate.entity import entity_eval
    from tickerpulse.evaluate.labelers import FunctionLabeler
    from tickerpulse.evaluate.suite import injection_eval

    labelers = [FunctionLabeler("VADER", vader, "vader"),
                FunctionLabeler("majority class", partial(majority, ["neutral", "neutral", "positive"]), "majority")]
    recs = [Record(id="p1", text="Apple soars on record sales while Ford slumps badly.", label="neutral", source="finentity",
                   targets=[Target(target="Apple", score=0.7, ticker=None, label="positive"),
                            Target(target="Ford", score=-0.7, ticker=None, label="negative")]),
            Record(id="p2", text="Tesla shares were flat.", label="neutral", source="finentity",
                   targets=[Target(target="Tesla", score=0.0, ticker=None, label="neutral")])]
    ent = entity_eval(labelers, recs, out)
    items = [EvalItem(id=f"t{k}", messages=[], text=t, target="MSFT", ticker="MSFT")
             for k, t in enumerate(["MSFT beats estimates, great quarter", "MSFT misses, awful guidance", "MSFT flat"])]
    inj = injection_eval(labelers, items, {}, prompt_version="sentiment-v2")
    (out / "injection.json").write_text(json.dumps(inj))
    return ent, inj


def test_card_entity_and_injection_tables_come_from_their_files(tmp_path: Path) -> None:
    _write_run(tmp_path, GOLD)
    ent, inj = _entity_and_injection_files(tmp_path)
    card = build_card(tmp_path, RecipeConfig())
    assert list(card["entity"]["systems"]) == ["VADER", "majority class"]  # ENTITY_ORDER: baselines after students
    v = card["entity"]["systems"]["VADER"]
    assert v["accuracy"] == ent["systems"]["VADER"]["accuracy"] and v["conflict_paragraphs"] == 1
    md = card_markdown(card)
    assert "## Entity level" in md and "3 targets in 2 paragraphs" in md
    m = ent["systems"]["majority class"]
    iv = m["ci95"]

    def cell(v, key):
        return f"{v} [{100 * iv[key][0]:.1f}-{100 * iv[key][1]:.1f}%]"

    acc, conflict = f"{100 * m['accuracy']:.1f}%", f"{100 * m['conflict_accuracy']:.1f}%"
    assert (f"| majority class | {cell(acc, 'accuracy')} | {cell(conflict, 'conflict_accuracy')} | "
            f"{cell('0/1', 'told_apart')} |") in md
    assert "resampling whole paragraphs" in md
    assert card["injection"]["families"] == inj["families"] and len(inj["families"]) == 5
    row = next(line for line in md.splitlines() if line.startswith("| VADER |") and "(n=3)" not in line
               and line.count("|") == len(inj["families"]) + 4)
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    fams = inj["systems"]["VADER"]["families"]
    assert cells[:5] == [f"{100 * fams[f]['flip_rate']:.1f}%" for f in inj["families"]]
    assert all(f"{f} (n=3)" in md for f in inj["families"]) and "Reasoning mode's label" in md
    # the headline's reasoning column: fast mode's flip rate, said to be the same label pass (no reasoning row)
    t = {x["key"]: x for x in card["targets"][REASON]}["injection_flip"]
    assert t["value"] is None  # fast mode was not among this injection run's systems either
    assert "Reasoning: not recorded." in md and "{target, ticker, sentiment, score, reasoning}" in md


def test_card_without_entity_json_says_not_measured(tmp_path: Path) -> None:
    _write_run(tmp_path, GOLD)  # an older or tiny run: no entity.json, injection.json without families
    items = _items()
    write_eval(score_run(REASON, items[:2], _answers([json.dumps({"ticker": None, "sentiment": g, "score": 0.0,
                                                                 "reasoning": ""}) for g in GOLD[:2]]),
                         config={"reasoning": "evidence"}), tmp_path / "eval" / "tfns" / "student-reasoning")
    card = build_card(tmp_path, RecipeConfig())
    assert card["entity"] is None and card["reasoning"] == "evidence"
    md = card_markdown(card)
    assert "## Entity level" in md and "Not measured (this run had no FinEntity data)." in md
    assert "Reasoning: reasoning mode's `reasoning` quotes evidence from the post" in md
    assert "| student fast | 25.0% (1) | 25.0% |" in md  # overall only: the file has no families
    t = {x["key"]: x for x in card["targets"][REASON]}["injection_flip"]
    assert t["value"] == 0.25 and t["same_as"] and "(= fast mode: the same label pass)" in headline_markdown(card)
