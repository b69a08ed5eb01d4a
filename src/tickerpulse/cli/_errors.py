"""Turn expected user errors (bad config, bad data, missing model or extra) into one red line + exit 2."""

from __future__ import annotations

import typer
from rich.console import Console


def run_app(app: typer.Typer) -> int:
    from tickerpulse._optional import MissingDependency
    from tickerpulse.config import ConfigError
    from tickerpulse.data.formats import DataError
    from tickerpulse.models.registry import ModelNotFound

    try:
        app()  # standalone mode: click handles --help, usage errors and exit codes itself (SystemExit)
    except (ConfigError, DataError, ModelNotFound, MissingDependency, FileNotFoundError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    return 0
