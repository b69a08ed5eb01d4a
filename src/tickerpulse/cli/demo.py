"""`tickerpulse demo`: run the project's story on the embedded defaults (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def demo(
    steps: str | None = typer.Option(None, "--steps", help="Comma-separated steps to run (default: all, in order)."),
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the demo's artifacts."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=8, help="Cap per generated answer."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N sample headlines."),
    train_iters: int | None = typer.Option(None, "--train-iters", min=1,
                                           help="Optimizer steps of the demo's LoRA run [configs/demo-sentiment.yaml: "
                                                "200, or 10 minutes of steps]."),
    linger: bool = typer.Option(False, "--linger/--no-linger",
                                help="Keep the stream and its dashboard running at the end until Ctrl-C."),
    list_steps: bool = typer.Option(False, "--list", help="List the steps and exit."),
) -> None:
    """The whole story on the embedded defaults: base answers, distill, train, compare, fuse, serve, stream."""
    import time

    from tickerpulse.demo import STEPS, DemoContext, run_demo, select_steps

    console = Console()
    if list_steps:
        for s in STEPS:
            console.print(f"[bold]{s.name}[/]: {s.help}")
        return
    from tickerpulse.cli.generate import _quiet_transformers

    _quiet_transformers()
    names = [n.strip() for n in steps.split(",") if n.strip()] if steps else None
    t0 = time.perf_counter()
    try:
        select_steps(names)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--steps") from None
    report = run_demo(DemoContext(out=out, model=model, console=console, max_tokens=max_tokens, limit=limit,
                                  train_iters=train_iters, linger=linger), names)
    console.print(f"[green]demo done[/] in {time.perf_counter() - t0:.0f}s: {', '.join(report['steps'])} -> {out}/",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
