"""`tickerpulse convert-adapter`: PEFT (torch) <-> mlx-lm LoRA adapter folders."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def convert_adapter(
    source: Path = typer.Argument(..., help="Run folder / PEFT adapter folder (--to mlx) or mlx-lm adapter folder (--to peft)."),
    to: str = typer.Option(..., "--to", help="peft or mlx."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
) -> None:
    """Convert a LoRA/DoRA adapter between PEFT and mlx-lm formats (same logits; full fine-tunes are refused).

    --to mlx: `mlx_lm.generate --model BASE --adapter-path OUT`. --to peft: `tickerpulse fuse/eval/serve --adapter OUT`.
    """
    from tickerpulse.models.adapter_convert import convert_run

    path = convert_run(source, out, to=to)
    console.print(f"[green]wrote[/] {to} adapter {path}")
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("convert-adapter")(convert_adapter)
