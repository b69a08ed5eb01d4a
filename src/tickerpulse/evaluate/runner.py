"""`tickerpulse eval`: generate answers for every item, score them, write `eval.json` and `eval.md`.

The pieces are separate so other stages reuse them: `load_items` (items.py) -> `generate_answers` (batched,
with a progress bar) -> `score_answers` (metrics from texts; the recipe can feed it answers from anywhere)
-> `write_eval`. `evaluate(cfg)` runs them in order on one model.

Determinism: greedy decoding by default (temperature 0) and `torch.manual_seed(seed)`; with sampling, the
same seed, items and batch size give the same answers. Latency of an item is the time from the start of its
batch to its last token (what a caller of a batched server waits); tokens/s is all generated tokens over
all generation wall time.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tickerpulse.config import ConfigError, StrictModel
from tickerpulse.evaluate import metrics as M
from tickerpulse.evaluate.items import EvalItem, PromptTicker, Task, load_items

EVAL_SCHEMA_VERSION = 1


class EvalConfig(StrictModel):
    """Everything one evaluation depends on (written into eval.json)."""

    model: str = Field(..., description="Base model: built-in name, hub id or local HF folder.")
    adapter: str | None = Field(None, description="Run folder whose adapter is applied on top of --model.")
    data: str = Field(..., description="A .jsonl file or a folder holding <split>.jsonl.")
    split: str = Field("test", description="Which file of a data folder to read.")
    limit: int | None = Field(None, ge=1, description="Evaluate a seeded random sample of this many items.")
    task: Task = Field("auto", description="sentiment (JSON answers) or text (reference answers); auto decides.")
    prompt_ticker: PromptTicker = Field("first", description="Labeled records: first gold ticker in the prompt, or none.")
    batch_size: int = Field(16, ge=1)
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop: list[str] = Field(default_factory=list, description="Extra stop strings (EOS always stops).")
    metrics: list[str] = Field(default_factory=list, description="Text metrics: exact, contains, module:function.")
    regex: str | None = Field(None, description="Extract the answer with this pattern, then exact-match it.")
    device: str = "auto"
    dtype: str = "auto"
    out: str | None = Field(None, description="Output folder (eval.json, eval.md).")

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        for spec in self.metrics:
            try:
                M.load_metric(spec)
            except ValueError as exc:
                raise ValueError(f"--metric: {exc}") from None
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"--regex {self.regex!r} is not a valid pattern: {exc}") from None
        return self


@dataclass
class Answer:
    """One generated answer with its cost."""

    text: str
    n_tokens: int = 0
    latency: float = 0.0
    finish_reason: str = "stop"


@dataclass
class GenerationRun:
    answers: list[Answer]
    wall_s: float
    peak_memory_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- generation
def generate_answers(model: Any, tok: Any, items: list[EvalItem], *, batch_size: int = 16, max_tokens: int = 128,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stop: list[str] | None = None,
                     label: str = "eval", progress: bool = True) -> GenerationRun:
    """Answers for all items through `generate_batch`, one batch at a time with a rich progress bar.

    Items are grouped by prompt length (less padding), answers come back in item order.
    """
    import torch

    from tickerpulse.models.generate import encode_prompt, generate_batch, peak_memory_mb

    torch.manual_seed(seed)
    lengths = [len(encode_prompt(tok, it.messages)) for it in items]
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    answers: list[Answer | None] = [None] * len(items)
    bar = _progress(progress)
    n_tokens = 0
    start = time.perf_counter()
    with bar:
        task = bar.add_task(label, total=len(items), tps="")
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            results = generate_batch(model, tok, [items[i].messages for i in chunk], max_tokens=max_tokens,
                                     temperature=temperature, top_p=top_p, seed=seed + b, stop=stop or None,
                                     batch_size=batch_size)
            for i, r in zip(chunk, results):
                answers[i] = Answer(r.text, r.n_tokens, r.latency, r.finish_reason)
                n_tokens += r.n_tokens
            elapsed = time.perf_counter() - start
            bar.update(task, advance=len(chunk), tps=f"{n_tokens / elapsed:.0f} tok/s" if elapsed else "")
            if progress and not bar.console.is_terminal:  # logs and CI: no live bar, so one line per batch
                done = min(b + batch_size, len(order))
                eta = elapsed / done * (len(order) - done)
                bar.console.print(f"{label} {done}/{len(order)} items, {n_tokens / elapsed:.1f} tok/s, "
                                  f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s", highlight=False)
    return GenerationRun([a for a in answers if a is not None], time.perf_counter() - start,
                         peak_memory_mb(getattr(model, "device", "cpu")))


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[tps]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


# ----------------------------------------------------------------------------------------------- scoring
def score_answers(items: list[EvalItem], texts: list[str], task: Literal["sentiment", "text"],
                  metric_specs: list[str] | None = None, regex: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-item records for answer texts (from any system) against the items' gold answers.

    Returns:
        (metrics, per_item) where per_item[i] holds the parse result, correctness and text-metric values.
    """
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} items but {len(texts)} answers")
    per_item: list[dict[str, Any]] = [{"prediction": t} for t in texts]
    metrics: dict[str, Any] = {"task": task}
    if task == "sentiment":
        parsed = [M.parse_prediction(t) for t in texts]
        gold = [it.gold_label or "" for it in items]
        have_scores = any(it.gold_score is not None for it in items)
        have_tickers = any(it.gold_tickers is not None for it in items)
        metrics.update(M.sentiment_metrics(
            gold, parsed,
            gold_scores=[it.gold_score for it in items] if have_scores else None,
            gold_tickers=[it.gold_tickers or [] for it in items] if have_tickers else None,
        ))
        for rec, p, g in zip(per_item, parsed, gold):
            rec.update(p.to_dict())
            rec["correct"] = p.label == g
    specs = list(metric_specs or [])
    if task == "text" and not specs and regex is None:
        specs = ["exact"]
    golds = [it.gold_text or "" for it in items]
    dicts = [it.to_dict() for it in items]
    text_metrics: dict[str, Any] = {}
    for spec in specs:
        means, values = M.text_metric_scores(M.load_metric(spec), texts, golds, dicts)
        text_metrics[spec] = means
        for rec, v in zip(per_item, values):
            rec.setdefault("text_metrics", {})[spec] = v
    if regex is not None:
        values = [M.regex_match(t, g, regex) for t, g in zip(texts, golds)]
        text_metrics["regex"] = {"mean": M.rate(values), "pattern": regex}
        for rec, v in zip(per_item, values):
            rec.setdefault("text_metrics", {})["regex"] = v
    if text_metrics:
        metrics["text"] = text_metrics
    if task == "text":
        metrics["n"] = len(items)
    return metrics, per_item


def label_result(name: str, items: list[EvalItem], labels: list[str], scores: list[float | None] | None = None,
                 data_info: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    """An eval result for a system that outputs labels (and maybe scores) instead of JSON text: majority
    class, VADER, TF-IDF + LR, fast label scoring. It has no JSON/schema rates; a label outside LABELS counts
    as invalid. The dict has the eval.json shape, so `write_html_report` puts it beside generated ones.
    """
    if len(labels) != len(items) or (scores is not None and len(scores) != len(items)):
        raise ValueError(f"{len(items)} items but {len(labels)} labels / {len(scores or labels)} scores")
    from tickerpulse.task.contract import LABELS

    pred = [lab if lab in LABELS else M.INVALID for lab in labels]
    gold = [it.gold_label or "" for it in items]
    metrics: dict[str, Any] = {"task": "sentiment", **M.classification_report(gold, pred), "scores": None}
    if scores is not None and any(it.gold_score is not None for it in items):
        metrics["scores"] = M.score_metrics([it.gold_score for it in items], scores)
    records = [{"id": it.id, "text": it.text, "gold_label": g, "gold_score": it.gold_score, "label": p,
                "score": None if scores is None else scores[i], "correct": p == g, "prediction": p}
               for i, (it, g, p) in enumerate(zip(items, gold, pred))]
    return {"tickerpulse_eval": EVAL_SCHEMA_VERSION, "name": name, "config": {"model": description or name},
            "data": data_info or {}, "metrics": metrics, "items": records}


def latency_metrics(run: GenerationRun) -> dict[str, Any]:
    """Per-item latency percentiles (seconds) and throughput of one generation run."""
    lat = sorted(a.latency for a in run.answers)
    toks = sum(a.n_tokens for a in run.answers)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else 0.0

    return {
        "latency_mean_s": statistics.fmean(lat) if lat else 0.0,
        "latency_p50_s": pct(0.5),
        "latency_p95_s": pct(0.95),
        "latency_max_s": lat[-1] if lat else 0.0,
        "generated_tokens": toks,
        "mean_answer_tokens": toks / len(lat) if lat else 0.0,
        "hit_max_tokens": sum(a.finish_reason == "length" for a in run.answers),
        "tokens_per_s": toks / run.wall_s if run.wall_s else 0.0,
        "items_per_s": len(lat) / run.wall_s if run.wall_s else 0.0,
        "wall_s": run.wall_s,
        "peak_memory_mb": run.peak_memory_mb,
    }


# ---------------------------------------------------------------------------------------------- pipeline
def evaluate(cfg: EvalConfig, *, items: list[EvalItem] | None = None, task: str | None = None,
             data_info: dict[str, Any] | None = None, model_tok: tuple[Any, Any] | None = None,
             label: str = "eval", progress: bool = True, write: bool = True) -> dict[str, Any]:
    """Evaluate one model (+ adapter) on the data of `cfg`; returns the eval.json dict (and writes it).

    `items/task/data_info` and `model_tok` may be passed in (compare loads items once for both models).
    """
    from tickerpulse.task.contract import load_prompt
    from tickerpulse.models.loading import load_model

    if items is None:
        items, task, data_info = load_items(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed, task=cfg.task,
                                            prompt_ticker=cfg.prompt_ticker)
    assert task is not None
    load_start = time.perf_counter()
    model, tok = model_tok if model_tok is not None else load_model(cfg.model, device=cfg.device, dtype=cfg.dtype,
                                                                     adapter=cfg.adapter)
    load_s = time.perf_counter() - load_start
    run = generate_answers(model, tok, items, batch_size=cfg.batch_size, max_tokens=cfg.max_tokens,
                           temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, stop=cfg.stop,
                           label=label, progress=progress)
    metrics, per_item = score_answers(items, [a.text for a in run.answers], task, cfg.metrics, cfg.regex)  # type: ignore[arg-type]
    metrics.update(latency_metrics(run))
    records = []
    for it, a, rec in zip(items, run.answers, per_item):
        records.append({
            "id": it.id, "text": it.text, "gold": it.gold_text, "gold_label": it.gold_label,
            "gold_score": it.gold_score, "gold_tickers": it.gold_tickers, **rec,
            "n_tokens": a.n_tokens, "latency_s": round(a.latency, 4), "finish_reason": a.finish_reason,
        })
    prompt = load_prompt()
    result = {
        "tickerpulse_eval": EVAL_SCHEMA_VERSION,
        "name": label,
        "config": cfg.model_dump(),
        "model": {"model": cfg.model, "adapter": cfg.adapter, "dtype": str(getattr(model, "dtype", "")),
                  "device": str(getattr(model, "device", "")), "load_s": round(load_s, 2)},
        "data": data_info or {},
        "prompt": {"version": prompt["version"], "hash": prompt["hash"]} if task == "sentiment" else None,
        "command": " ".join(sys.argv),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "metrics": metrics,
        "items": records,
    }
    if write and cfg.out:
        write_eval(result, cfg.out)
    return result


def write_eval(result: dict[str, Any], out: str | Path) -> Path:
    """Write eval.json and eval.md into `out`; returns the folder."""
    from tickerpulse.evaluate.report import eval_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    (out / "eval.md").write_text(eval_markdown(result), encoding="utf-8")
    return out


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read an eval.json (or the folder holding one).

    Raises:
        FileNotFoundError / ConfigError: missing file or not an eval result.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "tickerpulse_eval" not in data:
        raise ConfigError(f"{path} is not a tickerpulse eval.json")
    return data
