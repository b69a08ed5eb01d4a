"""`tickerpulse eval`: any labeler over the items, scored into one `EvalResult` (eval.json + eval.md).

The pieces are separate so other stages reuse them: `load_items` (items.py) -> a labeler answers them
(labelers.py: free generation, the served engine, a server over HTTP, a baseline) -> `score_answers`
(metrics from answer texts, whatever produced them) -> `run_labeler` builds the result -> `write_eval`.
`evaluate(cfg)` runs them in order for the CLI.

Latency of an item is the time from the start of its batch to its end (what a caller of a batched server
waits); tokens/s (generation only) is all generated tokens over all generation wall time.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tickerpulse.config import ConfigError, StrictModel
from tickerpulse.evaluate import metrics as M
from tickerpulse.evaluate.items import EvalItem, PromptTicker, Task, load_items
from tickerpulse.evaluate.labelers import GenerationLabeler, Labeler, LabelerRun
from tickerpulse.evaluate.result import EvalResult, ItemRecord, Latency, SentimentMetrics, TextMetrics
from tickerpulse.task.contract import LABELS
from tickerpulse.task.metrics import INVALID, classification_report, rate, score_metrics

EvalMode = Literal["generate", "fast", "reasoning"]


class EvalConfig(StrictModel):
    """Everything one evaluation depends on (written into eval.json)."""

    model: str | None = Field(None, description="Base model: built-in name, hub id or local HF folder.")
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
    mode: EvalMode = Field("generate", description="generate: free generation of the whole answer; fast / "
                           "reasoning: the served sentiment modes (in-process, or the server at --url).")
    url: str | None = Field(None, description="Measure a running server's /v1/sentiment instead of loading a model.")

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if self.url is None and self.model is None:
            raise ValueError("--model is required (or --url to measure a running server)")
        if self.url is not None and (self.mode == "generate" or self.model or self.adapter):
            raise ValueError("--url measures the server's /v1/sentiment: give --mode fast or reasoning, "
                             "and no --model/--adapter (the server has its own)")
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


# ----------------------------------------------------------------------------------------------- scoring
def score_answers(items: list[EvalItem], texts: list[str], task: Literal["sentiment", "text"],
                  metric_specs: list[str] | None = None,
                  regex: str | None = None) -> tuple[SentimentMetrics | TextMetrics, list[dict[str, Any]]]:
    """Metrics and per-item records for answer texts (from any system) against the items' gold answers.

    Returns:
        (metrics without latency, per_item) where per_item[i] holds the `ItemRecord` fields of the parse
        result, correctness and text-metric values.
    """
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} items but {len(texts)} answers")
    per_item: list[dict[str, Any]] = [{"prediction": t} for t in texts]
    numbers: dict[str, Any] = {}
    if task == "sentiment":
        parsed = [M.parse_prediction(t) for t in texts]
        gold = [it.gold_label or "" for it in items]
        have_scores = any(it.gold_score is not None for it in items)
        have_tickers = any(it.gold_tickers is not None for it in items)
        numbers.update(M.sentiment_metrics(
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
        text_metrics["regex"] = {"mean": rate(values), "pattern": regex}
        for rec, v in zip(per_item, values):
            rec.setdefault("text_metrics", {})["regex"] = v
    if text_metrics:
        numbers["text"] = text_metrics
    if task == "sentiment":
        return SentimentMetrics.model_validate(numbers), per_item
    return TextMetrics.model_validate({**numbers, "n": len(items)}), per_item


def label_metrics(items: list[EvalItem], labels: list[str], scores: list[float | None] | None) -> SentimentMetrics:
    """Metrics of a label-only system (majority class, VADER, TF-IDF + LR): no JSON/schema rates; a label
    outside LABELS counts as invalid."""
    pred = [lab if lab in LABELS else INVALID for lab in labels]
    score_numbers = None
    if scores is not None and any(it.gold_score is not None for it in items):
        score_numbers = score_metrics([it.gold_score for it in items], scores)
    return SentimentMetrics.model_validate({**classification_report([it.gold_label or "" for it in items], pred),
                                            "scores": score_numbers})


def latency_metrics(run: LabelerRun) -> Latency:
    """Per-item latency percentiles (seconds) and throughput of one run; token counts when it generated."""
    lat = sorted(a.latency for a in run.answers)
    toks = sum(a.n_tokens for a in run.answers)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else 0.0

    out: dict[str, Any] = {
        "latency_mean_s": statistics.fmean(lat) if lat else 0.0,
        "latency_p50_s": pct(0.5),
        "latency_p95_s": pct(0.95),
        "latency_max_s": lat[-1] if lat else 0.0,
    }
    if toks:
        out.update({
            "generated_tokens": toks,
            "mean_answer_tokens": toks / len(lat),
            "hit_max_tokens": sum(a.finish_reason == "length" for a in run.answers),
            "tokens_per_s": toks / run.wall_s if run.wall_s else 0.0,
        })
    out.update({"items_per_s": len(lat) / run.wall_s if run.wall_s else 0.0, "wall_s": run.wall_s,
                "peak_memory_mb": run.peak_memory_mb})
    return Latency.model_validate(out)


def score_run(name: str, items: list[EvalItem], run: LabelerRun, task: Literal["sentiment", "text"] = "sentiment", *,
              metric_specs: list[str] | None = None, regex: str | None = None, **fields: Any) -> EvalResult:
    """The result of one labeler's run on these items: metrics, latency and every item's record.

    `fields` are the other EvalResult fields (config, model, data, prompt, command, host).
    """
    if len(run.answers) != len(items):
        raise ValueError(f"{len(items)} items but {len(run.answers)} answers")
    metrics: SentimentMetrics | TextMetrics
    if run.label_only:
        pred = [a.text if a.text in LABELS else INVALID for a in run.answers]
        metrics = label_metrics(items, pred, [a.score for a in run.answers])
        per_item = [{"prediction": a.text, "label": p, "score": a.score, "correct": p == (it.gold_label or "")}
                    for it, a, p in zip(items, run.answers, pred)]
    else:
        metrics, per_item = score_answers(items, [a.text for a in run.answers], task, metric_specs, regex)
    metrics.latency = latency_metrics(run)
    records = [ItemRecord.model_validate({
        "id": it.id, "text": it.text, "gold": it.gold_text, "gold_label": it.gold_label, "gold_score": it.gold_score,
        "gold_tickers": it.gold_tickers, **rec, "n_tokens": a.n_tokens, "latency_s": round(a.latency, 4),
        "finish_reason": a.finish_reason}) for it, a, rec in zip(items, run.answers, per_item)]
    return EvalResult(name=name, metrics=metrics, items=records, **fields)


def run_labeler(labeler: Labeler, items: list[EvalItem], task: Literal["sentiment", "text"] = "sentiment", *,
                name: str | None = None, data_info: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
                metric_specs: list[str] | None = None, regex: str | None = None) -> EvalResult:
    """Measure one labeler on these items. `config` defaults to the labeler's own description."""
    run = labeler.answer(items)
    return score_run(name or labeler.name, items, run, task, metric_specs=metric_specs, regex=regex,
                     config=config if config is not None else dict(labeler.system), model=dict(labeler.system),
                     data=data_info or {})


# ---------------------------------------------------------------------------------------------- pipeline
def evaluate(cfg: EvalConfig, *, labeler: Labeler | None = None, items: list[EvalItem] | None = None,
             task: str | None = None, data_info: dict[str, Any] | None = None, label: str = "eval",
             progress: bool = True, write: bool = True) -> EvalResult:
    """Evaluate one labeler on the data of `cfg`; returns the result (and writes eval.json/eval.md to cfg.out).

    The labeler defaults to what `cfg` names: free generation of `cfg.model` (+ adapter), or the server at
    `cfg.url`. The served engine in-process (`--mode fast|reasoning`) is built by the caller
    (`serve.labeler.EngineLabeler`) and passed in. `items/task/data_info` may be passed in (compare loads
    the items once for both models).

    Raises:
        ConfigError: a served mode on data that is not a sentiment task, or a mode without its labeler.
    """
    from tickerpulse.task.contract import load_prompt

    if items is None:
        items, task, data_info = load_items(cfg.data, split=cfg.split, limit=cfg.limit, seed=cfg.seed, task=cfg.task,
                                            prompt_ticker=cfg.prompt_ticker)
    assert task is not None
    if cfg.mode != "generate" and task != "sentiment":
        raise ConfigError(f"--mode {cfg.mode} answers the sentiment task; {cfg.data} is a {task} task")
    if labeler is None:
        labeler = _default_labeler(cfg, label, progress)
    result = run_labeler(labeler, items, task, name=label, data_info=data_info,  # type: ignore[arg-type]
                         config=cfg.model_dump(), metric_specs=cfg.metrics, regex=cfg.regex)
    prompt = load_prompt()
    result.prompt = {"version": prompt["version"], "hash": prompt["hash"]} if task == "sentiment" else None
    result.command = " ".join(sys.argv)
    result.host = {"python": platform.python_version(), "machine": platform.machine()}
    if write and cfg.out:
        write_eval(result, cfg.out)
    return result


def _default_labeler(cfg: EvalConfig, label: str, progress: bool) -> Labeler:
    if cfg.url is not None:
        from tickerpulse.evaluate.http import HttpLabeler

        return HttpLabeler(cfg.url, mode=cfg.mode, max_tokens=cfg.max_tokens, name=label)  # type: ignore[arg-type]
    if cfg.mode != "generate":
        raise ConfigError(f"--mode {cfg.mode} runs the served engine: pass its labeler (serve.labeler.EngineLabeler)")
    from tickerpulse.models.loading import load_model

    assert cfg.model is not None
    start = time.perf_counter()
    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, adapter=cfg.adapter)
    system = {"model": cfg.model, "adapter": cfg.adapter, "mode": "generate", "dtype": str(getattr(model, "dtype", "")),
              "device": str(getattr(model, "device", "")), "load_s": round(time.perf_counter() - start, 2)}
    return GenerationLabeler(model, tok, name=label, system=system, batch_size=cfg.batch_size,
                             max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                             stop=cfg.stop, progress=progress)


def write_eval(result: EvalResult, out: str | Path) -> Path:
    """Write eval.json and eval.md into `out`; returns the folder."""
    from tickerpulse.evaluate.report import eval_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(result.to_json(), encoding="utf-8")
    (out / "eval.md").write_text(eval_markdown(result), encoding="utf-8")
    return out
