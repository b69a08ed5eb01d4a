"""The sentiment recipe, end to end: data -> gold (or real) teacher -> LoRA -> fuse -> calibrate -> evaluate
against baselines -> model card, installed under `<TICKERPULSE_HOME>/models/<name>`.

Steps (each writes into `cfg.out`): `data/` (record files per dataset and split), `distill/` (chat JSONL from
the distill job), `run/` (the training run folder), `eval/<dataset>/<system>/eval.json`, `report/<dataset>/`
(HTML), `injection.json`, `timings.json`, then the card (`card.json`, `MODEL_CARD.md`) built only from those
files by `tickerpulse.recipe.card`.

Never tuned on test data: early stopping and the fast-mode calibration use the validation split only.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tickerpulse.data.finentity import paragraph_id
from tickerpulse.data.records import Record
from tickerpulse.models.loading import cpu_supports_bf16, write_serving_dtype
from tickerpulse.recipe.card import FAST, FREE, REASON
from tickerpulse.recipe.config import CHAT_SOURCES, DATASETS, ENTITY_DATASET, TRAIN_SETS, RecipeConfig
from tickerpulse.recipe.data import assemble, read_data, split_stats, write_records
from tickerpulse.task.contract import LABEL_AFTER
from tickerpulse.task.questions import Question

Log = Callable[[str], None]


class Timer:
    """Wall time per step (written to timings.json)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.steps: dict[str, float] = {}

    def step(self, name: str, since: float) -> None:
        self.steps[name] = round(time.perf_counter() - since, 2)


def run_recipe(cfg: RecipeConfig, log: Log = print, argv: list[str] | None = None,
               evaluate_only: bool = False) -> dict[str, Any]:
    """Build, evaluate and install the student; returns the card dict (also written as card.json).

    `evaluate_only`: keep the work folder's data and run and the installed student, and run calibration,
    evaluation and the card again (after a change to the engine or the evaluation, without retraining).
    """
    timer = Timer()
    out = Path(cfg.out)
    if evaluate_only:
        return _evaluate_and_card(cfg, read_data(out / "data"), out, log, timer,
                                  json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {})
    if out.exists():
        shutil.rmtree(out)  # a recipe run is a rebuild: stale evals must never reach the card
    out.mkdir(parents=True)
    (out / "recipe.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    (out / "command.txt").write_text(" ".join(argv or sys.argv) + "\n")

    t = time.perf_counter()
    data = assemble(Path(cfg.shared_data), cfg.splits, cfg.seed)
    for ds, splits in data.items():
        for split, rows in splits.items():
            write_records(rows, out / "data" / f"{ds}-{split}.jsonl")
    (out / "data" / "stats.json").write_text(json.dumps(split_stats(data), indent=2) + "\n")
    log("data: " + ", ".join(f"{ds} {'/'.join(str(len(data[ds][s])) for s in ('train', 'valid', 'test'))}" for ds in data)
        + " (train/valid/test; finentity test in paragraphs, the others in questions)")
    timer.step("data", t)

    t = time.perf_counter()
    chat = distill_chat(cfg, data, out, log)
    timer.step("distill", t)

    t = time.perf_counter()
    fit = deadline_budget(timer.t0 + cfg.wall_budget, cfg.post_train_tokens) if cfg.wall_budget else None
    train_student(cfg, chat, out / "run", log, argv, budget_fit=fit)
    timer.step("train", t)

    if cfg.eval.compare_previous:
        t = time.perf_counter()
        previous_entity_eval(cfg, data, out, log)
        timer.step("previous_entity", t)

    t = time.perf_counter()
    from tickerpulse.export.fuse import fuse

    model_dir = cfg.install_dir
    res = fuse(out / "run", model_dir, overwrite=True, command=argv)
    student_dtype = _cpu_dtype(cfg.eval.student_dtype)
    write_serving_dtype(model_dir, student_dtype, "calibrated and evaluated in this dtype by `tickerpulse recipe`",
                        prompt_version=cfg.prompt_version, reasoning=reasoning_kind(cfg))
    log(f"fused -> {model_dir} (max |logit diff| {res.max_abs_logit_diff}; served in {student_dtype} on CPU)")
    timer.step("fuse", t)

    return _evaluate_and_card(cfg, data, out, log, timer)


def _evaluate_and_card(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]], out: Path, log: Log, timer: Timer,
                       earlier: dict[str, float] | None = None) -> dict[str, Any]:
    """Calibrate, evaluate, write timings and the card; `earlier` holds the timings of steps not rerun."""
    from tickerpulse.recipe.card import write_card

    model_dir = cfg.install_dir
    t = time.perf_counter()
    calib = calibrate(cfg, data, model_dir, log)
    (out / "calibration.json").write_text(json.dumps(calib, indent=2) + "\n")
    timer.step("calibrate", t)

    evaluate_all(cfg, data, model_dir, out, log, timer)
    kept = {k: v for k, v in (earlier or {}).items() if k in ("data", "distill", "train", "previous_entity", "fuse")}
    timer.steps = {**kept, **timer.steps}
    timer.steps["total_before_card"] = round(sum(kept.values()) + time.perf_counter() - timer.t0, 2)
    (out / "timings.json").write_text(json.dumps(timer.steps, indent=2) + "\n")
    card = write_card(out, model_dir, cfg)
    log(f"card: {model_dir / 'README.md'}")
    return card


# ------------------------------------------------------------------------------------------------ distill
def _repeats(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]]) -> Callable[[dict], int]:
    """chat row -> how many times it is trained: `splits.repeat` of its dataset, `conflict_repeat` for a
    FinEntity question (`<paragraph id>#k`, injected copies too) whose paragraph's entities differ in label."""
    labels: dict[str, set[str]] = {}
    for r in data.get(ENTITY_DATASET, {}).get("train", []):
        labels.setdefault(paragraph_id(r.id), set()).add(r.label)
    conflict = {p for p, ls in labels.items() if len(ls) > 1}

    def times(row: dict) -> int:
        meta = row["meta"]
        n = cfg.splits.repeat.get(meta.get("source"), 1)
        if meta.get("source") == ENTITY_DATASET and paragraph_id(str(meta.get("id", ""))) in conflict:
            n *= cfg.splits.conflict_repeat
        return n

    return times


def distill_chat(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]], out: Path, log: Log) -> Path:
    """Train and valid records -> chat JSONL through the distill job (gold or a real teacher)."""
    from tickerpulse.data.formats import iter_jsonl
    from tickerpulse.distill.job import DistillConfig, run_distill

    chat = out / "chat"
    chat.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        rows = [r for ds in CHAT_SOURCES if ds in data for r in data[ds].get(split, [])]
        if split == "train":
            from tickerpulse.evaluate.injection import augment

            rows += augment(rows, cfg.injection_augment, cfg.seed)
        random.Random(cfg.seed).shuffle(rows)
        src = write_records(rows, out / "data" / f"all-{split}.jsonl")
        dcfg = DistillConfig(input=str(src), out=out / "distill" / split, teacher=cfg.teacher,
                             teacher_model=cfg.teacher_model, n_train=len(rows), n_valid=0, n_test=0, seed=cfg.seed,
                             prompt_version=cfg.prompt_version, near_dup_threshold=1.0,
                             cache=out / "distill-cache.sqlite" if cfg.teacher == "gold" else None)
        report = run_distill(dcfg)
        written = report.get("counts", {}).get("written", {})
        # iter_jsonl reads by "\n" (str.splitlines() would also break at U+2028 inside tweets) and names file:line
        rows_out = [row for _, row in iter_jsonl(out / "distill" / split / "train.jsonl")]
        rng = random.Random(cfg.seed + 1)
        if split == "train":  # rows trained again (`repeat`, `conflict_repeat`), each copy in another place
            times = _repeats(cfg, data)
            if again := [r for r in rows_out for _ in range(times(r) - 1)]:
                rows_out += again
                rng.shuffle(rows_out)
        cut = 0
        with open(chat / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows_out:
                if cfg.reasoning == "empty":
                    row = _empty_reasoning(row)
                if split == "train" and rng.random() >= cfg.full_answer_share.get(row["meta"].get("source"), 1.0):
                    row = _cut_after_label(row)
                    cut += 1
                if split == "train" and (share := cfg.soft_label.get(row["meta"].get("source"), 0.0)):
                    row = soft_label(row, share)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        log(f"distill {split}: {len(rows_out)} chat rows from {len(rows)} records (teacher {cfg.teacher}; {written})"
            + (f"; {cut} trained only through the label" if cut else ""))
    return chat


def _empty_reasoning(row: dict[str, Any]) -> dict[str, Any]:
    ans = json.loads(row["messages"][-1]["content"])
    row["messages"][-1]["content"] = json.dumps({**ans, "reasoning": ""}, ensure_ascii=False)
    row.setdefault("meta", {})["reasoning"] = "empty"
    return row


def reasoning_kind(cfg: RecipeConfig) -> str:
    """What the student's reasoning mode gives: the teacher's kind of text when it learned one, else evidence
    (the words of the post that move its label most, `serve.evidence`): a model trained on empty reasoning
    would otherwise write whatever fits the schema."""
    return "generated" if cfg.reasoning == "teacher" else "evidence"


def _cut_after_label(row: dict[str, Any]) -> dict[str, Any]:
    """Train this row's answer only through its label (see `full_answer_share`)."""
    ans = json.loads(row["messages"][-1]["content"])
    return {**row, "train_through": f'{LABEL_AFTER}{ans["sentiment"]}"'}


def soft_label(row: dict[str, Any], share: float) -> dict[str, Any]:
    """Train this row's label token toward (1 - share) * onehot(label) + share * q(score), q = (positive
    max(s, 0), neutral 1 - |s|, negative max(-s, 0)): under q, p(pos) - p(neg) is the score itself. Written as
    collate's `soft_target` (the own label keeps its weight; each other label gets its probability / the own
    label's). Hard cross-entropy makes the label token equally sure of a 0.2 and a 0.9 positive, and a
    temperature fitted afterwards cannot reorder those."""
    ans = json.loads(row["messages"][-1]["content"])
    label, s = ans["sentiment"], max(-1.0, min(1.0, float(ans["score"])))
    q = {"positive": max(s, 0.0), "neutral": 1.0 - abs(s), "negative": max(-s, 0.0)}
    target = {k: (1.0 - share) * (k == label) + share * p for k, p in q.items()}
    if target[label] <= 1e-6:  # share 1 and a score whose sign contradicts the label: no distribution to train
        return row
    also = {k: round(p / target[label], 6) for k, p in target.items() if k != label and p > 0}
    return {**row, "soft_target": {"after": LABEL_AFTER, "also": also}} if also else row


# -------------------------------------------------------------------------------------------------- train
def train_student(cfg: RecipeConfig, chat: Path, run: Path, log: Log, argv: list[str] | None,
                  budget_fit: Callable[[float, float], float] | None = None) -> dict[str, Any]:
    from tickerpulse.train.api import train

    result = train(cfg.train_config(data=chat, run=run), argv=argv, budget_fit=budget_fit)
    s = result.summary
    log(f"trained: {s.get('status')}, best step {s.get('best_step')}, val loss {s.get('best_val_loss')}, "
        f"{s.get('tokens_per_sec', 0):.0f} tok/s, {s.get('train_time_s')} s")
    return s


# Validation passes, loading and saves add to the step time: with a pass every 100 steps 9.7% with AMX
# (1,951 s of steps, 2,140 s of training), 14.8% without (1,450 s, 1,664 s); every 200 steps 9.2% without
# (1,496 s, 1,634 s).
VALIDATION_SHARE = 0.10


def deadline_budget(deadline: float, post_train_tokens: float) -> Callable[[float, float], float]:
    """The step-time budget that ends training early enough for the later stages to finish by `deadline`.

    Training and evaluation both slow down on a slower CPU (no AMX: half the tokens/s), so the reserve for
    the stages after training is a token count divided by the measured training throughput, not seconds."""
    def fit(tokens_per_sec: float, spent: float) -> float:
        left = deadline - time.perf_counter() - post_train_tokens / tokens_per_sec
        return spent + max(left, 0.0) / (1 + VALIDATION_SHARE)

    return fit


# ---------------------------------------------------------------------------------------------- calibrate
def calibration_questions(data: dict[str, dict[str, list[Record]]]) -> list[Question]:
    """Each validation row's question (`questions_of`: its target, its gold, its dataset as the group). Every
    question counts for the label offsets; only those with a real gold score (FiQA's: label-only datasets
    carry None, `data.records`) for the score temperature."""
    return [q for ds in TRAIN_SETS if ds in data for r in data[ds]["valid"] for q in r.questions()[:1]]


def calibrate(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]], model_dir: Path, log: Log) -> dict[str, Any]:
    """Fit the fast-mode label bias (macro-F1) and score temperature (FiQA score MAE) on the VALID split;
    write calibration.json into the model (the serving engine reads it)."""
    from tickerpulse.evaluate.calibrate import fit_calibration
    from tickerpulse.serve.engine import SentimentEngine

    (model_dir / "calibration.json").unlink(missing_ok=True)  # fit on the raw label probabilities, not on a previous fit's
    engine = SentimentEngine(str(model_dir))
    result = fit_calibration(engine.label_probs, calibration_questions(data), bias_grid=cfg.eval.bias_grid,
                             temperature_grid=cfg.eval.calibration_grid, seed=cfg.seed)
    (model_dir / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    bias = result["bias_fit"]
    log(f"calibration: label bias {bias['label_bias']} (fitted {bias.get('fitted_bias')}, valid mean macro-F1 "
        f"{bias.get('without_bias', 0):.3f} -> {bias.get('value', 0):.3f}, cross-validated gain "
        f"{bias.get('cv_gain', 0):+.3f} +- {bias.get('cv_gain_se', 0):.3f}: {'kept' if bias.get('kept') else 'not kept'}), "
        f"temperature {result['temperature']} ({result['objective']} {result['value']:.4f} on {result['n']} valid items)")
    return result


# ----------------------------------------------------------------------------------------------- evaluate
def evaluate_all(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]], model_dir: Path, out: Path, log: Log,
                 timer: Timer) -> None:
    """Every system on every test set (`evaluate.suite`): eval.json files + one HTML report per test set, then
    the injection check (injection.json)."""
    from tickerpulse.evaluate.baselines import TfidfLR, baseline_labelers
    from tickerpulse.evaluate.items import load_items
    from tickerpulse.evaluate.labelers import GenerationLabeler
    from tickerpulse.evaluate.suite import System, evaluate_set, injection_eval
    from tickerpulse.recipe.data import TEST_NAMES
    from tickerpulse.serve.engine import SentimentEngine
    from tickerpulse.serve.labeler import EngineLabeler

    t = time.perf_counter()
    train_rows = [r for ds in TRAIN_SETS if ds in data for r in data[ds]["train"]]
    tfidf = TfidfLR(cfg.seed).fit([r.text for r in train_rows], [r.label for r in train_rows])
    baselines = baseline_labelers([r.label for r in train_rows], tfidf)
    timer.step("baselines_fit", t)

    ev = cfg.eval
    student = SentimentEngine(str(model_dir))
    fast = EngineLabeler(student, "fast", name=FAST, system={"mode": "fast label scoring, calibrated score"})
    reasoning = EngineLabeler(student, "reasoning", max_tokens=ev.max_tokens, name=REASON, system={
        "mode": "served reasoning mode: label pass, then schema-constrained generation of score and reasoning"})
    # free generation on the engine's model: one load, the served dtype
    free = GenerationLabeler(student.rt.hf, student.rt.tok, name=FREE, batch_size=ev.batch_size, max_tokens=ev.max_tokens,
                             progress=False, system={**fast.system, "mode": "free greedy generation of the whole JSON "
                                                     "answer (no constraint)", "max_tokens": ev.max_tokens,
                                                     "batch_size": ev.batch_size})
    systems = [System(b) for b in baselines]
    if ev.base_zero_shot:
        base_dtype = _cpu_dtype(ev.base_dtype)
        base = SentimentEngine(cfg.base_model, dtype=base_dtype)
        systems.append(System(EngineLabeler(base, "fast", name="base zero-shot (fast)", system={
            "model": cfg.base_model, "mode": "fast label scoring", "dtype": base_dtype}), limit=ev.base_limit))
    systems += [System(fast), System(reasoning, ev.reasoning_limit, agree_with=FAST),
                System(free, ev.generation_limit, agree_with=FAST)]
    clean_tfns: dict[str, dict[str, str | None]] = {}
    for ds in DATASETS:
        t = time.perf_counter()
        items, _, info = load_items(out / "data" / f"{ds}-test.jsonl", task="sentiment", prompt_version=cfg.prompt_version)
        results = evaluate_set(systems, items, info, seed=cfg.seed, eval_dir=out / "eval" / ds,
                               report_dir=out / "report" / ds, title=f"{cfg.name}: {TEST_NAMES[ds]}", notes=[
                                   f"{len(items)} test items never trained on; baselines fitted on the same "
                                   f"{len(train_rows)} training rows", "fast = label-token scoring (served default); "
                                   "reasoning = the served reasoning mode (constrained); free generation = "
                                   "unconstrained greedy JSON on a sample"])
        if ds == "tfns":
            clean_tfns = {r.name: r.labels_by_id for r in results}
        log(f"eval {TEST_NAMES[ds]} ({len(items)} items): "
            + str({r.name: round(r.sentiment.accuracy, 3) for r in results}))
        timer.step(f"eval_{ds}", t)

    t = time.perf_counter()
    items, _, info = load_items(out / "data" / "tfns-test.jsonl", task="sentiment", limit=ev.injection_n, seed=cfg.seed,
                                prompt_version=cfg.prompt_version)
    # reasoning mode's label is fast mode's label pass: its flip rates are fast mode's (injection_eval's notes)
    labelers = [fast, *([free] if ev.injection_free_generation else []), baselines[1], baselines[2]]
    inj = injection_eval(labelers, items, info, prompt_version=cfg.prompt_version, known=clean_tfns)
    (out / "injection.json").write_text(json.dumps(inj, indent=2) + "\n")
    log("injection: flip rate " + ", ".join(
        f"{k} " + "/".join(f"{f} {v['families'][f]['flip_rate']:.2f}" for f in v["families"]) for k, v in inj["systems"].items()))
    timer.step("injection", t)

    test_path = out / "data" / f"{ENTITY_DATASET}-test.jsonl"
    if test_path.is_file():
        t = time.perf_counter()
        from tickerpulse.evaluate.entity import entity_eval

        paragraphs = data[ENTITY_DATASET]["test"]
        info = {"path": str(test_path), "split": "test", "paragraphs": len(paragraphs)}
        previous = out / PREVIOUS / "entity.json"
        res = entity_eval([fast, baselines[2], baselines[1], baselines[0]], paragraphs, out,
                          prompt_version=cfg.prompt_version, data_info=info,
                          earlier=json.loads(previous.read_text()) if previous.is_file() else None)
        log("entity level (FinEntity test): " + ", ".join(
            f"{k} {v['accuracy']:.3f} / conflict {v['conflict_accuracy'] or 0:.3f} / told apart {v['told_apart'] or 0:.2f}"
            for k, v in res["systems"].items()))
        timer.step("eval_entity", t)


# The model the run replaces, measured at entity level before it is overwritten (the card's "previous student").
PREVIOUS = "previous"
PREVIOUS_NAME = "previous student"


def previous_entity_eval(cfg: RecipeConfig, data: dict[str, dict[str, list[Record]]], out: Path, log: Log) -> None:
    """The installed model this run will replace, on the FinEntity test entities (fast mode, asked the way its
    own prompt allows), into out/previous/entity.json; nothing when no model is installed there."""
    from tickerpulse.evaluate.entity import entity_eval
    from tickerpulse.serve.engine import SentimentEngine
    from tickerpulse.serve.labeler import EngineLabeler

    folder = cfg.install_dir
    paragraphs = data.get(ENTITY_DATASET, {}).get("test", [])
    if not (folder / "config.json").is_file() or not paragraphs:
        return
    engine = SentimentEngine(str(folder), dtype=_cpu_dtype(cfg.eval.student_dtype))
    labeler = EngineLabeler(engine, "fast", name=PREVIOUS_NAME, system={
        "model": str(folder), "mode": "fast label scoring", "prompt_version": engine.prompt_version})
    res = entity_eval([labeler], paragraphs, out / PREVIOUS, prompt_version=engine.prompt_version,
                      data_info={"split": "test", "model": str(folder)})
    m = res["systems"][PREVIOUS_NAME]
    log(f"previous student ({engine.prompt_version}) on FinEntity test: accuracy {m['accuracy']:.3f}, "
        f"conflict {m['conflict_accuracy'] or 0:.3f}, told apart {m['told_apart'] or 0:.2f}")
    del engine


def _cpu_dtype(name: str) -> str:
    """auto -> bf16 on a CPU with native bf16, else fp32."""
    if name != "auto":
        return name
    return "bfloat16" if cpu_supports_bf16() else "float32"
