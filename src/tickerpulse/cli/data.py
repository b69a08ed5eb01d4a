"""`tickerpulse data ...`: validate, stats, convert, split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

data_app = typer.Typer(help="Validate, inspect, convert and split datasets.", no_args_is_help=True)
console = Console()


@data_app.command("validate")
def validate(
    folder: Path = typer.Argument(..., help="Folder with train/valid/test.jsonl, or one .jsonl file."),
    max_errors: int = typer.Option(50, help="Stop listing a file's errors after this many."),
) -> None:
    """Check every row of every split; print `file:line: reason` for each broken row."""
    from tickerpulse.data.formats import split_files, validate_file

    files = {folder.stem: folder} if folder.is_file() else split_files(folder)
    if not files:
        console.print(f"[red]error:[/] no train/valid/test.jsonl in {folder}")
        raise typer.Exit(2)
    bad = False
    for split, path in files.items():
        rep = validate_file(path, max_errors=max_errors)
        for err in rep.errors:
            typer.echo(err, err=True)
        bad |= bool(rep.errors)
        status = "[red]FAIL[/]" if rep.errors else "[green]ok[/]"
        console.print(f"{status} {path.name}: {rep.rows} valid rows, format {rep.format or '?'}, {len(rep.errors)} errors")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
