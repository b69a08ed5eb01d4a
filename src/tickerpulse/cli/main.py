"""The `tickerpulse` console script: discovers verb modules in this package and runs typer."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

import tickerpulse

app = typer.Typer(
    name="tickerpulse",
    help="Distill, fine-tune, evaluate, serve and stream a small financial-sentiment LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tickerpulse {tickerpulse.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """tickerpulse: raw text -> teacher labels -> fine-tuned student -> server -> live stream."""


def _register_all() -> None:
    import tickerpulse.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name in {"main"} or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"tickerpulse.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from tickerpulse.cli._errors import run_app

    sys.exit(run_app(app))


if __name__ == "__main__":
    main()
