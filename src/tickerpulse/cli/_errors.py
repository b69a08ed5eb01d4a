"""Turn expected user errors (bad config, bad data, missing model or extra) into one red line + exit 2."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape


def run_app(app: typer.Typer) -> int:
    from tickerpulse._optional import MissingDependency
    from tickerpulse.config import ConfigError
    from tickerpulse.data.formats import DataError
    from tickerpulse.models.registry import ModelNotFound

    # a path the user gave that cannot be used the way they asked is their error too, not ours
    path_errors = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
    try:
        app()  # standalone mode: click handles --help, usage errors and exit codes itself (SystemExit)
    except (ConfigError, DataError, ModelNotFound, MissingDependency, *path_errors) as exc:
        # the message quotes user data (a row's text, a file name): printed as is, never read as markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        return 2
    return 0
