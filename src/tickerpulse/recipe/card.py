"""The model card: built only from the files a recipe run wrote (eval.json per system and test set, read
back as `EvalResult`s like the eval/compare reports read them; injection.json (flip rates per injection
family), entity.json (FinEntity targets asked by name; absent in runs without FinEntity: "not measured"), the
run's summary.json, timings.json, data/stats.json, calibration.json), never from numbers held in memory, so
every figure in it can be traced to an eval output (a test recomputes them). The kind of reasoning the model
gives is the one its reasoning-mode eval.json recorded (the engine's `reasoning`). Fast mode's targets carry a
95% bootstrap interval over the test items (`item_interval`; FinEntity's over paragraphs, from entity.json), so a
reader can see which misses and passes one run's noise could turn around (injection flip rates: over posts,
from injection.json).

Writes `card.json` and `MODEL_CARD.md` into the work folder and the model folder (as README.md and
MODEL_CARD.md there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickerpulse.evaluate.result import EvalResult, ItemRecord, SentimentMetrics
from tickerpulse.recipe.config import DATASETS, RecipeConfig
from tickerpulse.recipe.data import TEST_NAMES
from tickerpulse.task.contract import load_prompt
from tickerpulse.task.metrics import INVALID, accuracy, bootstrap_interval, macro_f1, score_metrics
from tickerpulse.train.config import BUDGET_FIT_STEP

FAST, REASON, FREE = "student fast", "student reasoning", "student free generation"
PREVIOUS = "previous student"
SYSTEM_ORDER = ("majority class", "VADER", "TF-IDF + LR", "base zero-shot (fast)", FAST, REASON, FREE)
ENTITY_ORDER = (FAST, PREVIOUS, "TF-IDF + LR", "VADER", "majority class")
REASONING_KINDS = {
    "evidence": "reasoning mode's `reasoning` quotes evidence from the post (spans picked out of the text, "
                "not generated)",
    "generated": "reasoning mode's `reasoning` is a sentence the model generates after its label",
}

@dataclass(frozen=True)
class Metric:
    """One card metric two ways: read from a test set's stored `SentimentMetrics` (the eval's own number), or
    recomputed from item records (each item's stored label and score, what the eval computed that number from)
    for a subset or a resample of the items. One definition per metric, so both always agree."""

    of_set: Callable[[SentimentMetrics], float | None]
    of_items: Callable[[list[ItemRecord]], float | None]


def _labels(its: list[ItemRecord]) -> tuple[list[str], list[str]]:
    return [str(i.gold_label) for i in its], [i.label or INVALID for i in its]


def _score_field(field: str) -> Callable[[list[ItemRecord]], float | None]:
    def of_items(its: list[ItemRecord]) -> float | None:
        m = score_metrics([i.gold_score for i in its], [i.score for i in its])
        return None if m is None else m[field]
    return of_items


ACCURACY = Metric(lambda m: m.accuracy, lambda its: accuracy(*_labels(its)))
MACRO_F1 = Metric(lambda m: m.macro_f1, lambda its: macro_f1(*_labels(its)))
SCORE_MAE = Metric(lambda m: m.scores.mae if m.scores else None, _score_field("mae"))
SCORE_SPEARMAN = Metric(lambda m: m.scores.spearman if m.scores else None, _score_field("spearman"))


# (key, dataset, metric, threshold, higher is better, what)
TARGETS: tuple[tuple[str, str, Metric, float, bool, str], ...] = (
    ("tfns_accuracy", "tfns", ACCURACY, 0.88, True, "twitter valid-a accuracy"),
    ("tfns_macro_f1", "tfns", MACRO_F1, 0.85, True, "twitter valid-a macro-F1"),
    ("fpb_accuracy", "fpb", ACCURACY, 0.93, True, "PhraseBank test accuracy"),
    ("fpb_macro_f1", "fpb", MACRO_F1, 0.90, True, "PhraseBank test macro-F1"),
    ("fiqa_mae", "fiqa", SCORE_MAE, 0.25, False, "FiQA test score MAE"),
    ("fiqa_spearman", "fiqa", SCORE_SPEARMAN, 0.65, True, "FiQA test score Spearman"),
)


# FinEntity test, entity level (entity.json): (metric, what, threshold), higher is better
ENTITY_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("accuracy", "FinEntity test accuracy (each entity by name)", 0.85),
    ("conflict_accuracy", "FinEntity accuracy on paragraphs with conflicting labels", 0.80),
    ("told_apart", "FinEntity conflicting paragraphs told apart", 0.70),
)


def load_evals(out: Path) -> dict[str, dict[str, EvalResult]]:
    """dataset -> system name -> its result, read from out/eval/<dataset>/<system>/eval.json."""
    evals: dict[str, dict[str, EvalResult]] = {}
    for ds in DATASETS:
        for f in sorted((out / "eval" / ds).glob("*/eval.json")):
            r = EvalResult.load(f)
            evals.setdefault(ds, {})[r.name] = r
    return evals


def fast_on_items(fast: EvalResult, ids: set[str], metric: Metric) -> float | None:
    """Fast mode's number on the items with these ids: a sampled column's number next to fast mode's on the
    very same items (a sample can be easier or harder than the whole test set)."""
    records = [it for it in fast.items if it.id in ids]
    return metric.of_items(records) if records else None


def item_interval(r: EvalResult, metric: Metric, draws: int = 1000, seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of a metric over `r`'s test items resampled with replacement."""
    items = list(r.items)
    return bootstrap_interval(len(items), lambda draw: metric.of_items([items[j] for j in draw]), draws=draws,
                              seed=seed)


def system_row(r: EvalResult) -> dict[str, Any]:
    """The numbers the card shows for one system on one test set."""
    m = r.sentiment
    return {
        "n": m.n, "accuracy": m.accuracy, "macro_f1": m.macro_f1,
        "recall": {lab: m.per_class[lab].recall for lab in ("negative", "neutral", "positive") if lab in m.per_class},
        "json_valid": m.json_valid, "schema_valid": m.schema_valid,
        "score_mae": SCORE_MAE.of_set(m), "score_spearman": SCORE_SPEARMAN.of_set(m),
        "confusion": m.confusion.model_dump(), "agreement_with_fast": m.agreement_with.get("fast"),
        "tokens_per_s": m.latency.tokens_per_s, "items_per_s": m.latency.items_per_s,
    }


def _target(key: str, what: str, value: float | None, threshold: float, higher: bool,
            n: int | None = None, ci95: list[float] | None = None) -> dict[str, Any]:
    if value is None:
        return {"key": key, "what": what, "threshold": threshold, "value": None, "met": False, "miss_by": None, "n": n}
    met = value >= threshold if higher else value <= threshold
    return {"key": key, "what": what, "threshold": threshold, "value": value, "met": met,
            "miss_by": 0.0 if met else abs(threshold - value), "n": n, "ci95": ci95}


def _ordered(names: list[str], order: tuple[str, ...]) -> list[str]:
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def entity_section(out: Path) -> dict[str, Any] | None:
    """The entity-level numbers of entity.json, None when the run did not measure them (no FinEntity data)."""
    path = out / "entity.json"
    if not path.is_file():
        return None
    ent = json.loads(path.read_text())
    keys = ("accuracy", "conflict_accuracy", "told_apart", "told_apart_paragraphs", "conflict_paragraphs",
            "pairs", "pairs_told_apart", "ci95", "prompt_version", "asked_as")
    return {"targets": ent["targets"], "paragraphs": ent["paragraphs"],
            "systems": {n: {k: ent["systems"][n].get(k) for k in keys}
                        for n in _ordered(list(ent["systems"]), ENTITY_ORDER)}}


def injection_section(inj: dict[str, Any]) -> dict[str, Any]:
    """injection.json's rates per system, overall and per family (an older file without families: overall)."""
    return {"n": inj["n"], "families": inj.get("families", []), "notes": inj.get("notes", []),
            "systems": inj["systems"]}


def reasoning_kind(evals: dict[str, dict[str, EvalResult]]) -> str | None:
    """The kind of reasoning the served model gives, as the engine recorded it in its eval.json config."""
    for mode in (REASON, FAST):
        for ds in DATASETS:
            r = evals.get(ds, {}).get(mode)
            if r is not None and r.config.get("reasoning"):
                return str(r.config["reasoning"])
    return None


def build_card(out: Path, cfg: RecipeConfig) -> dict[str, Any]:
    """The card dict from the run's files (see the module docstring)."""
    evals = load_evals(out)
    inj = json.loads((out / "injection.json").read_text())
    summary = json.loads((out / "run" / "summary.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    stats = json.loads((out / "data" / "stats.json").read_text())
    calib = json.loads((out / "calibration.json").read_text())
    results = {ds: {name: system_row(r) for name, r in sorted(evals.get(ds, {}).items(),
                                                                  key=lambda kv: SYSTEM_ORDER.index(kv[0]) if kv[0] in SYSTEM_ORDER else 99)}
               for ds in DATASETS}
    targets: dict[str, list[dict[str, Any]]] = {FAST: [], REASON: [], FREE: []}
    entity = (entity_section(out) or {}).get("systems", {})
    for mode in (FAST, REASON, FREE):
        for key, ds, metric, thr, higher, what in TARGETS:
            r = evals.get(ds, {}).get(mode)
            t = _target(key, what, metric.of_set(r.sentiment) if r else None, thr, higher,
                        r.sentiment.n if r else None, item_interval(r, metric) if r and mode == FAST else None)
            if mode != FAST and r is not None and FAST in evals.get(ds, {}):
                t["fast_same_items"] = fast_on_items(evals[ds][FAST], {it.id for it in r.items}, metric)
            targets[mode].append(t)
        schema = [evals[ds][mode].sentiment.schema_valid for ds in DATASETS if mode in evals.get(ds, {})]
        targets[mode].append(_target("schema_valid", "schema-valid answers (lowest test set)",
                                     min(schema) if schema else None, 1.0, True))
        # reasoning mode's label is fast mode's label pass (serve/engine), so injection_eval measures fast mode only
        source = FAST if mode == REASON and REASON not in inj["systems"] else mode
        flip = inj["systems"][source]["flip_rate"] if source in inj["systems"] else None
        t = _target("injection_flip", "injection flip rate (all families)", flip, 0.05, False,
                    ci95=inj["systems"][source].get("ci95") if flip is not None and mode == FAST else None)
        if source != mode and flip is not None:
            t["same_as"] = "fast mode: the same label pass"
        targets[mode].append(t)
        for fam in inj.get("families", []):
            per = inj["systems"][source]["families"][fam] if source in inj["systems"] else {}
            rate = per.get("flip_rate")
            t = _target(f"injection_flip_{fam}", f"injection flip rate: {fam}", rate, 0.05, False,
                        ci95=per.get("ci95") if mode == FAST else None)
            if source != mode and rate is not None:
                t["same_as"] = "fast mode"
            targets[mode].append(t)
        ent = entity.get(FAST) if mode in (FAST, REASON) else None  # reasoning mode's label is fast mode's
        for metric, what, thr in ENTITY_TARGETS:
            t = _target(f"finentity_{metric}", what, ent.get(metric) if ent else None, thr, True,
                        ci95=(ent.get("ci95") or {}).get(metric) if ent and mode == FAST else None)
            if mode == REASON and ent:
                t["same_as"] = "fast mode"
            targets[mode].append(t)
    return {
        "name": cfg.name,
        "base_model": cfg.base_model,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompt_version": cfg.prompt_version,
        "wall_time_s": timings.get("total_before_card"),
        "timings_s": timings,
        "train": {k: summary.get(k) for k in ("status", "best_step", "step", "total_steps", "time_budget_s", "time_budget_fitted", "best_val_loss",
                                              "early_stopping_metric", "best_metric",
                                              "first_val_loss", "tokens_per_sec", "samples_per_sec", "train_tokens",
                                              "trained_tokens", "train_time_s", "wall_time_s", "trainable_params",
                                              "trained_layers", "base_dtype", "padding_waste", "peak_memory_mb")},
        "data": stats,
        "student_dtype": next((evals[ds][FAST].config.get("dtype") for ds in DATASETS if FAST in evals.get(ds, {})), None),
        "calibration": {**{k: calib.get(k) for k in ("temperature", "label_bias", "objective", "value", "n", "fitted_on")},
                        "bias_fit": {k: (calib.get("bias_fit") or {}).get(k) for k in ("objective", "constraint", "value", "without_bias", "fitted_bias", "per_dataset_macro_f1", "cv_gain", "cv_gain_se", "cv_folds", "kept", "n")}},
        "results": results,
        "injection": injection_section(inj),
        "entity": entity_section(out),
        "reasoning": reasoning_kind(evals),
        "targets": targets,
        "config": cfg.model_dump(mode="json"),
    }


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _interval(iv: list[float] | None, pct: bool = True) -> str:
    """The ` [low-high]` shown after a number (percentages with one % sign); empty without an interval."""
    if not iv:
        return ""
    return f" [{_pct(iv[0])[:-1]}-{_pct(iv[1])}]" if pct else f" [{_num(iv[0])}-{_num(iv[1])}]"


def _fmt_target(t: dict[str, Any], full_n: int | None = None) -> str:
    """One cell; `(n=50)` when the value comes from a sample smaller than the whole test set (`full_n`)."""
    if t["value"] is None:
        return "not measured"
    pct = t["key"] not in ("fiqa_mae", "fiqa_spearman")
    val = (_pct(t["value"]) if pct else _num(t["value"])) + _interval(t.get("ci95"), pct)
    if t.get("n") and full_n and t["n"] < full_n:
        same = t.get("fast_same_items")
        shown = "" if same is None else f"; fast mode on these items: {_pct(same) if pct else _num(same)}"
        val += f" (n={t['n']}{shown})"
    if t.get("same_as"):
        val += f" (= {t['same_as']})"
    if t["met"]:
        return f"{val} ✅ met"
    pts = 100 * t["miss_by"]
    # a miss under 0.05 pt must not print as "missed by 0.0 pt"
    miss = (f"{pts:.1f} pt" if pts >= 0.05 else f"{pts:.2f} pt") if pct else f"{t['miss_by']:.3f}"
    return f"{val} ❌ missed by {miss}"


def headline_markdown(card: dict[str, Any]) -> str:
    """The targets table (what `make model` prints)."""
    how = "evidence from the post" if card.get("reasoning") == "evidence" else "constrained generation"
    lines = [f"| target | threshold | fast mode (served default) | reasoning mode (served, {how}) "
             "| free generation (sample, unconstrained) |", "|---|---|---|---|---|"]
    for tf, tr, tg in zip(card["targets"][FAST], card["targets"][REASON], card["targets"][FREE]):
        thr = tf["threshold"]
        thr_s = (f"<= {thr}" if tf["key"] in ("fiqa_mae",) else f">= {thr}" if tf["key"] == "fiqa_spearman"
                 else f"<= {100 * thr:.0f}%" if tf["key"].startswith("injection_flip") else f">= {100 * thr:.0f}%")
        full = tf.get("n")
        lines.append(f"| {tf['what']} | {thr_s} | {_fmt_target(tf)} | {_fmt_target(tr, full)} | {_fmt_target(tg, full)} |")
    return "\n".join(lines)


def entity_markdown(ent: dict[str, Any] | None) -> list[str]:
    """The entity-level table: systems as rows; accuracy, conflict accuracy, told apart n/N."""
    out = ["## Entity level: the target, not the post", ""]
    if ent is None:
        return out + ["Not measured (this run had no FinEntity data).", ""]
    out += [f"FinEntity test paragraphs ({ent['targets']} targets in {ent['paragraphs']} paragraphs), each distinct "
            "entity asked about by name. Conflict accuracy: accuracy on the targets of paragraphs whose targets "
            "carry different gold labels; told apart: of those paragraphs, the ones whose predicted labels differ "
            "too (a system that labels the post, not the target, tells none apart).", "",
            "| system | accuracy | conflict accuracy | told apart |", "|---|---|---|---|"]

    for name, m in ent["systems"].items():
        apart = (f"{m['told_apart_paragraphs']}/{m['conflict_paragraphs']}"
                 if m.get("conflict_paragraphs") else "–")
        iv = m.get("ci95") or {}
        out.append(f"| {name} | {_pct(m['accuracy'])}{_interval(iv.get('accuracy'))} | "
                   f"{_pct(m['conflict_accuracy'])}{_interval(iv.get('conflict_accuracy'))} | "
                   f"{apart}{_interval(iv.get('told_apart'))} |")
    out += ["", "[low-high]: 95% interval from resampling whole paragraphs (1,000 draws)."]
    return out + [""]


def injection_markdown(inj: dict[str, Any]) -> list[str]:
    """The injection table: flip rate per system (rows) and injection family (columns), overall last."""
    fams = inj["families"]
    out = ["## Robustness: injections in the post", "",
           f"{inj['n']} held-out twitter test posts per family, each with an injection appended that asks for a "
           "label other than the clean answer, phrased from an evaluation vocabulary disjoint from the one the "
           "training augmentation uses. Flip rate: share of labels that change.", ""]
    head = ["system", *(f"{f} (n={inj['n']})" for f in fams), "all: flip rate (flips)", "obeyed"]
    out += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, s in inj["systems"].items():
        per = s.get("families", {})
        cells = [name, *(_pct(per[f]["flip_rate"]) if f in per else "–" for f in fams),
                 f"{_pct(s['flip_rate'])} ({s['flips']})", _pct(s["obeyed_rate"])]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""] + [f"{n}" for n in inj["notes"]] + ([""] if inj["notes"] else [])


def card_markdown(card: dict[str, Any]) -> str:
    tr = card["train"]
    out = [f"# {card['name']}", "",
           f"Financial-sentiment student: {card['base_model']} + LoRA, fused, built by `tickerpulse recipe sentiment` "
           f"(`make model`). Prompt `{card['prompt_version']}`; answers "
           + ("`{target, ticker, sentiment, score, reasoning}` about the target the caller names (a symbol, an "
              "entity name, or none for the market)." if load_prompt(card["prompt_version"])["answer_target"]
              else "`{ticker, sentiment, score, reasoning}`."),
           "Reasoning: " + (REASONING_KINDS.get(card.get("reasoning") or "", f"`{card.get('reasoning')}`")
                            if card.get("reasoning") else "not recorded") + ".",
           "", "```bash", f"tickerpulse models path {card['name']}", f"tickerpulse serve --model {card['name']}",
           "```", "", "## Targets (test data never trained on, never tuned on)", "", headline_markdown(card), "",
           "[low-high]: 95% bootstrap interval of fast mode's number over the test items (FinEntity: over its "
           "paragraphs; injection: over the posts); a threshold inside it is met or missed within this test set's "
           "sampling noise.", "",
           f"Wall time of the whole recipe: **{card['wall_time_s'] / 60:.1f} min** "
           f"(steps: {', '.join(f'{k} {v:.0f}s' for k, v in card['timings_s'].items() if k != 'total_before_card')}).",
           f"Training: {tr['status']}, {tr['step']} of {tr['total_steps']} steps"
           + (f" (time budget {tr['time_budget_s']:.0f} s of steps"
              + (f", fitted at step {BUDGET_FIT_STEP} to the {card['config']['wall_budget'] / 60:g}-minute wall budget"
                 if tr.get("time_budget_fitted") and card.get("config", {}).get("wall_budget") else "") + ")"
              if tr.get("time_budget_s") else "")
           + f", best step {tr['best_step']} ("
           + (f"label-token loss {_num(tr['best_metric'])}, chosen on it; "
              if tr.get("early_stopping_metric") == "weighted_token_loss" else "")
           + f"val loss {_num(tr['best_val_loss'])} from {_num(tr['first_val_loss'])}), "
           f"**{(tr['tokens_per_sec'] or 0):.0f} tokens/s** ({(tr['samples_per_sec'] or 0):.2f} samples/s), "
           f"{tr['train_time_s']} s, {tr['trainable_params']} trainable parameters in blocks {tr['trained_layers']}, "
           f"base dtype {tr['base_dtype']}, peak memory {tr['peak_memory_mb']} MB. "
           f"The fused student was evaluated in {card.get('student_dtype') or 'float32'} (its `serving.json`: "
           "`serve --model` loads it so on a CPU with native bf16, fp32 elsewhere).", ""]
    for ds in DATASETS:
        rows = card["results"].get(ds, {})
        out += [f"## {TEST_NAMES[ds]}", "",
                "| system | n | accuracy | macro-F1 | recall neg | recall neu | recall pos | JSON-valid | schema-valid | score MAE | Spearman |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            rec = r["recall"]
            out.append(f"| {name} | {r['n']} | {_pct(r['accuracy'])} | {_pct(r['macro_f1'])} | {_pct(rec.get('negative'))} | "
                       f"{_pct(rec.get('neutral'))} | {_pct(rec.get('positive'))} | {_pct(r['json_valid'])} | "
                       f"{_pct(r['schema_valid'])} | {_num(r['score_mae'])} | {_num(r['score_spearman'])} |")
        rs, gen = rows.get(REASON), rows.get(FREE)
        if rs:
            out += ["", f"Label agreement with fast mode: served reasoning mode **{_pct(rs['agreement_with_fast'])}** "
                    f"({rs['n']} items; it reuses the fast label pass by design)"
                    + (f", free generation **{_pct(gen['agreement_with_fast'])}** ({gen['n']} items, "
                       f"{_num(gen['tokens_per_s'])} generated tokens/s)." if gen else ".")]
        out += ["", "<details><summary>confusion matrices (rows gold, columns predicted)</summary>", ""]
        for name, r in rows.items():
            c = r["confusion"]
            if not c:
                continue
            out += [f"**{name}**", "", "| gold \\ pred | " + " | ".join(c["columns"]) + " |",
                    "|---" * (len(c["columns"]) + 1) + "|"]
            out += [f"| {g} | " + " | ".join(str(v) for v in row) + " |" for g, row in zip(c["rows"], c["matrix"])]
            out.append("")
        out += ["</details>", ""]
    out += entity_markdown(card.get("entity")) + injection_markdown(card["injection"])
    cal = card["calibration"]
    bf = cal.get("bias_fit") or {}
    kept = bf.get("kept")
    out += ["", "## Fast-mode calibration", "",
            f"Label = argmax(z + b) over the three label logits z with b = {cal.get('label_bias') or [0, 0, 0]} "
            f"[negative, neutral, positive]. Offsets fitted on the validation splits for mean macro-F1 over the "
            f"datasets, lowering none of them: {bf.get('fitted_bias')} ({_num(bf.get('without_bias'))} -> "
            f"{_num(bf.get('value')) if kept else 'kept out'}), cross-validated gain "
            f"{_num(bf.get('cv_gain'))} (standard error {_num(bf.get('cv_gain_se'))}, {bf.get('cv_folds')} folds): "
            f"{'kept' if kept else 'not kept (held-out gain within its standard error)'}. "
            f"Score = p(positive) - p(negative) from softmax((z + b) / T) with T = {cal['temperature']} "
            f"({cal['objective']} = {_num(cal['value'])} over {cal['n']} validation items). Both live in the model's "
            "`calibration.json`, fitted on validation data only; the served reasoning mode takes the same label "
            + ("and score (its reasoning is evidence from the post)." if card.get("reasoning") == "evidence"
               else "and generates its own score."), "",
            "## Data", "", "| dataset | split | rows | negative | neutral | positive |", "|---|---|---|---|---|---|"]
    for ds, splits in card["data"].items():
        for split, s in splits.items():
            lab = s["labels"]
            out.append(f"| {ds} | {split} | {s['rows']} | {lab.get('negative', 0)} | {lab.get('neutral', 0)} | {lab.get('positive', 0)} |")
    out += ["", "twitter-financial-news-sentiment (MIT): train -> our train + our own validation; valid-a is the test "
            "set. Financial PhraseBank all-agree (CC BY-NC-SA 3.0, non-commercial) and FiQA 2018 task 1 (research "
            "use): seeded stratified train/valid/test splits of the shared files; FiQA's per-target scores supervise "
            "`score`. Normalised duplicate texts never straddle splits. Labels come from the configured teacher "
            f"(`{card['config']['teacher']}`); reasoning text in training: `{card['config']['reasoning']}`."]
    out += ["", "## Config", "", "```json", json.dumps(card["config"], indent=2), "```", ""]
    return "\n".join(out)


def write_card(out: Path, model_dir: Path, cfg: RecipeConfig) -> dict[str, Any]:
    card = build_card(out, cfg)
    text = card_markdown(card)
    for folder in (out, model_dir):
        (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (folder / "MODEL_CARD.md").write_text(text, encoding="utf-8")
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return card
