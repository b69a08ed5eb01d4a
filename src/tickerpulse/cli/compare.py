"""`tickerpulse compare`: base vs fine-tuned on the same items -> a self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def compare_command(
    base: str | None = typer.Option(None, "--base", help="Base model: built-in name, hub id or local HF folder."),
    tuned: str | None = typer.Option(None, "--tuned", help="Training run folder (adapter on --base) or a standalone model folder."),
    data: str | None = typer.Option(None, "--data", help="A .jsonl file (chat, completions or labeled records) or a data folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.html, PNGs, base/ and tuned/ evals)."),
    split: str = typer.Option("test", help="Which <split>.jsonl of a data folder to read."),
    limit: int | None = typer.Option(None, help="Evaluate a seeded random sample of N items (file order kept)."),
    batch_size: int = typer.Option(16, help="Prompts generated together."),
    max_tokens: int = typer.Option(128, help="Cap on generated tokens per answer."),
    temp: float = typer.Option(0.0, "--temp", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (with --temp > 0)."),
    seed: int = typer.Option(0, help="Seed for --limit sampling and for sampling."),
    task: str = typer.Option("auto", help="auto | sentiment | text."),
    prompt_ticker: str = typer.Option("first", help="Labeled records: first gold ticker in the prompt (first) or none."),
    metric: list[str] = typer.Option([], "--metric", help="Text metric: exact, contains or module:function (repeatable)."),
    regex: str | None = typer.Option(None, help="Extract the answer with this regex (group 1), then exact-match it."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps."),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16."),
    max_disagreements: int = typer.Option(100, help="Disagreeing items listed in the report."),
    reuse_base: Path | None = typer.Option(None, "--reuse-base", help="A base-model eval.json made earlier with the same settings: reuse its answers."),
    from_eval: list[Path] = typer.Option([], "--from-eval", help="Skip generation: build the report from these eval.json files/folders (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate --base and --tuned on the same items, then write report.html: metric table side by side,
    confusion matrices, per-class F1, score scatter, latency, and the items where they disagree."""
    from tickerpulse.config import ConfigError

    if from_eval:
        from tickerpulse.evaluate.compare import report_from_evals

        try:
            path = report_from_evals(list(from_eval), out, max_disagreements=max_disagreements)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        console.print(f"wrote [bold]{path}[/]")
        return
    missing = [flag for flag, v in (("--base", base), ("--tuned", tuned), ("--data", data)) if v is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (or --from-eval to rebuild a report)")
    from tickerpulse.config import build
    from tickerpulse.evaluate.compare import compare
    from tickerpulse.evaluate.report import comparison_markdown
    from tickerpulse.evaluate.runner import EvalConfig

    cfg = build(EvalConfig, {
        "model": base, "data": data, "split": split, "limit": limit, "task": task, "prompt_ticker": prompt_ticker,
        "batch_size": batch_size, "max_tokens": max_tokens, "temperature": temp, "top_p": top_p, "seed": seed,
        "metrics": metric, "regex": regex, "device": device, "dtype": dtype,
    }, source="flags")
    results, path = compare(cfg, str(tuned), out, progress=not quiet, max_disagreements=max_disagreements,
                            reuse_base=reuse_base)
    console.print(comparison_markdown(results), markup=False, highlight=False)
    console.print(f"wrote [bold]{path}[/]")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
