"""`tickerpulse demo` (run by `make demo`): the project's story as a list of named steps.

Each step is a function taking one shared `DemoContext` (output folder, model, console, and a `state`
dict through which a step hands its results to later ones). Later stages append their steps to `STEPS`
in pipeline order (distill -> train -> compare -> fuse -> serve -> stream); `--steps` runs a subset.

v1 has one step, `base`: the default model answers the sentiment prompt for a handful of sample
headlines (shipped in the package, written for this project), and each answer is shown raw, parsed with
`parse_answer` (or the reason it failed), with its latency. Known limitation: the base model is not
trained for the task yet, so most answers are expected to fail parsing; that is the point of the later steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclass
class DemoContext:
    """What every step sees."""

    out: Path
    model: str = "smollm2-135m"
    console: Console = field(default_factory=Console)
    max_tokens: int = 64
    limit: int | None = None  # sample headlines to use (None: all)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One named demo step."""

    name: str
    help: str
    run: Callable[[DemoContext], None]


def sample_headlines(limit: int | None = None) -> list[dict[str, Any]]:
    """The packaged sample headlines `{id, text, ticker, label}`."""
    raw = resources.files("tickerpulse.data").joinpath("samples", "headlines.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def step_base(ctx: DemoContext) -> None:
    """The base model answers the sentiment prompt for each sample headline, one request at a time."""
    from rich.table import Table

    from tickerpulse.data.sentiment import build_messages, parse_answer
    from tickerpulse.models.generate import generate_batch
    from tickerpulse.models.loading import load_model

    with ctx.console.status(f"loading {ctx.model}"):
        t0 = time.perf_counter()
        model, tok = load_model(ctx.model)
        load_s = time.perf_counter() - t0
    ctx.console.print(f"loaded {ctx.model} in {load_s:.1f}s; answering {len(sample_headlines(ctx.limit))} headlines "
                      f"(greedy, up to {ctx.max_tokens} tokens each)", highlight=False)
    rows = []
    for h in sample_headlines(ctx.limit):
        # batch of one: the latency a single request sees
        res = generate_batch(model, tok, [build_messages(h["text"], h["ticker"])], max_tokens=ctx.max_tokens)[0]
        answer, reason = parse_answer(res.text)
        rows.append({**h, "raw": res.text, "parsed": answer.model_dump() if answer else None, "error": reason,
                     "latency_s": round(res.latency, 3), "tokens": res.n_tokens, "finish_reason": res.finish_reason})
        ctx.console.print(f"  [dim]{h['id']}: {res.latency:.1f}s, {res.n_tokens} tokens[/]", highlight=False)

    table = Table(title=f"{ctx.model}: sentiment answers for sample headlines")
    table.add_column("#", no_wrap=True)
    table.add_column("headline (ticker, expected)", ratio=3)
    table.add_column("parsed answer / why it failed", ratio=2)
    table.add_column("latency", justify="right", no_wrap=True)
    for i, r in enumerate(rows, start=1):
        head = f"{_clip(r['text'], 90)} [dim]({r['ticker'] or 'none'}, {r['label']})[/]"
        if r["parsed"]:
            p = r["parsed"]
            mark = "[green]✓[/]" if p["sentiment"] == r["label"] else "[yellow]✗[/]"
            got = f"{mark} {p['sentiment']} {p['score']:+.2f} ({p['ticker'] or 'none'})"
        else:
            got = f"[red]unparsed[/]: {r['error']}"
        table.add_row(str(i), head, got, f"{r['latency_s']:.1f}s")
    ctx.console.print(table)
    for i, r in enumerate(rows, start=1):
        ctx.console.print(f"[dim]#{i} raw:[/] {_clip(r['raw'], 160) or '(empty)'}", highlight=False, markup=True)
    parsed = sum(r["parsed"] is not None for r in rows)
    correct = sum(bool(r["parsed"]) and r["parsed"]["sentiment"] == r["label"] for r in rows)
    mean_latency = sum(r["latency_s"] for r in rows) / max(len(rows), 1)
    summary = {"model": ctx.model, "headlines": len(rows), "parsed": parsed, "correct": correct,
               "mean_latency_s": round(mean_latency, 3), "load_s": round(load_s, 2)}
    ctx.console.print(f"parsed {parsed}/{len(rows)}, label matches {correct}/{len(rows)}, "
                      f"mean latency {mean_latency:.2f}s", highlight=False)
    out = ctx.out / "base_answers.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ctx.state["base"] = {**summary, "answers": str(out)}


# The story, in order. Later stages append their steps here.
STEPS: list[Step] = [
    Step("base", "the base model answers the sentiment prompt for sample headlines", step_base),
]


def step_names() -> list[str]:
    return [s.name for s in STEPS]


def select_steps(names: list[str] | None) -> list[Step]:
    """Steps to run, in pipeline order; ValueError names an unknown step and lists the known ones."""
    if not names:
        return list(STEPS)
    unknown = [n for n in names if n not in step_names()]
    if unknown:
        raise ValueError(f"unknown demo step(s) {', '.join(unknown)}; steps: {', '.join(step_names())}")
    return [s for s in STEPS if s.name in names]


def run_demo(ctx: DemoContext, names: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen steps; write `out/demo.json` (per-step seconds and results) and return it."""
    steps = select_steps(names)
    ctx.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": ctx.model, "steps": {}}
    for i, step in enumerate(steps, start=1):
        ctx.console.rule(f"[bold]step {i}/{len(steps)}: {step.name}[/] — {step.help}")
        t0 = time.perf_counter()
        step.run(ctx)
        report["steps"][step.name] = {"seconds": round(time.perf_counter() - t0, 2), **ctx.state.get(step.name, {})}
    (ctx.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
