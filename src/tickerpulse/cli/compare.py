"""`tickerpulse compare`: base vs fine-tuned on the same items -> a self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tickerpulse.cli import _gen_options as opt

console = Console()


def compare_command(
    base: str | None = typer.Option(None, "--base", help="Base model: built-in name, hub id or local HF folder."),
    tuned: str | None = typer.Option(None, "--tuned", "--adapter-path",
                                     help="Training run folder (adapter on --base) or a standalone model folder "
                                     "(--adapter-path too, mlx-lm's name)."),
    data: str | None = opt.DATA,
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.html, PNGs, base/ and tuned/ evals)."),
    split: str = opt.SPLIT,
    limit: int | None = opt.LIMIT,
    batch_size: int = opt.BATCH_SIZE,
    max_tokens: int = opt.MAX_TOKENS,
    temp: float = opt.TEMP,
    top_p: float = opt.TOP_P,
    seed: int = opt.SEED,
    task: str = opt.TASK,
    prompt_ticker: str = opt.PROMPT_TICKER,
    metric: list[str] = opt.METRIC,
    regex: str | None = opt.REGEX,
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    max_disagreements: int = typer.Option(100, help="Disagreeing items listed in the report."),
    reuse_base: Path | None = typer.Option(None, "--reuse-base", help="A base-model eval.json made earlier with the same settings: reuse its answers."),
    from_eval: list[Path] = typer.Option([], "--from-eval", help="Skip generation: build the report from these eval.json files/folders (repeatable)."),
    quiet: bool = opt.QUIET,
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
