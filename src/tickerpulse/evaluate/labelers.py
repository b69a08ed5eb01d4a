"""Labelers: anything that answers evaluation items, behind one small Protocol, so one runner
(`runner.run_labeler`) measures them all and writes the same `EvalResult`.

Here: free generation of a model (`GenerationLabeler`, the whole JSON answer written unconstrained: base vs
tuned, arbitrary chat data) and label-only systems (`FunctionLabeler`: majority class, VADER, TF-IDF + LR).
Elsewhere: a running server over HTTP (`evaluate.http.HttpLabeler`) and the served engine in-process
(`serve.labeler.EngineLabeler`, fast or reasoning mode: it lives in serve because evaluate never imports a
later stage; the CLI and the recipe pass it in).

A labeler returns a `LabelerRun`: per item an answer text (JSON, scored by `runner.score_answers` exactly like
model output) or, when `label_only`, a label and a score; plus per-item latency and the run's wall time.
Latency of an item is the time from the start of its batch to the batch's end (what a batched caller waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tickerpulse.evaluate.items import EvalItem

T = TypeVar("T")


@dataclass
class Answer:
    """One item's answer with its cost. `text` is the answer text, or the label for a label-only system."""

    text: str
    n_tokens: int = 0
    latency: float = 0.0
    finish_reason: str = "stop"
    score: float | None = None  # label-only systems: their score


@dataclass
class LabelerRun:
    """A labeler's answers to a list of items, in item order."""

    answers: list[Answer]
    wall_s: float
    peak_memory_mb: float = 0.0
    label_only: bool = False


class Labeler(Protocol):
    """Answers items. `name` names it in reports; `system` describes what is measured (model, mode, dtype...)."""

    @property
    def name(self) -> str: ...

    @property
    def system(self) -> dict[str, Any]: ...

    def answer(self, items: Sequence[EvalItem]) -> LabelerRun: ...


def in_batches(call: Callable[[Sequence[EvalItem]], list[T]], items: Sequence[EvalItem],
               batch_size: int | None) -> tuple[list[T], list[float], float]:
    """(outputs, per-item latency, wall seconds) of `call` over consecutive batches (None: one batch)."""
    size = batch_size or max(1, len(items))
    outputs: list[T] = []
    latency: list[float] = []
    start = time.perf_counter()
    for b in range(0, len(items), size):
        chunk = items[b : b + size]
        t = time.perf_counter()
        got = call(chunk)
        if len(got) != len(chunk):
            raise RuntimeError(f"labeler answered {len(got)} of {len(chunk)} items")
        outputs += got
        latency += [time.perf_counter() - t] * len(chunk)
    return outputs, latency, time.perf_counter() - start


@dataclass
class FunctionLabeler:
    """A label-only system: `predict(texts) -> (labels, scores)` (see `evaluate.baselines`)."""

    name: str
    predict: Callable[[list[str]], tuple[list[str], list[float]]]
    description: str = ""

    @property
    def system(self) -> dict[str, Any]:
        return {"model": self.description or self.name}

    def answer(self, items: Sequence[EvalItem]) -> LabelerRun:
        def call(its: Sequence[EvalItem]) -> list[tuple[str, float]]:
            labels, scores = self.predict([it.text for it in its])
            return list(zip(labels, scores))

        pairs, latency, wall = in_batches(call, items, None)  # these systems predict all texts at once
        return LabelerRun([Answer(lab, latency=lat, score=s) for (lab, s), lat in zip(pairs, latency)], wall,
                          label_only=True)


@dataclass
class GenerationLabeler:
    """Free generation of a loaded HF model: the whole answer text, unconstrained (`generate_answers`)."""

    model: Any
    tok: Any
    name: str = "eval"
    system: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] | None = None
    progress: bool = True

    def answer(self, items: Sequence[EvalItem]) -> LabelerRun:
        return generate_answers(self.model, self.tok, list(items), batch_size=self.batch_size,
                                max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                seed=self.seed, stop=self.stop, label=self.name, progress=self.progress)


def generate_answers(model: Any, tok: Any, items: list[EvalItem], *, batch_size: int = 16, max_tokens: int = 128,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stop: list[str] | None = None,
                     label: str = "eval", progress: bool = True) -> LabelerRun:
    """Answers for all items through `generate_batch`, one batch at a time with a rich progress bar.

    Items are grouped by prompt length (less padding), answers come back in item order. Determinism: greedy
    by default and `torch.manual_seed(seed)`; with sampling, the same seed, items and batch size give the
    same answers. An item's latency runs from the start of its batch to its last token.
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
    return LabelerRun([a for a in answers if a is not None], time.perf_counter() - start,
                      peak_memory_mb(getattr(model, "device", "cpu")))


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[tps]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)
