"""`tickerpulse recipe sentiment`: build, evaluate and install the default student (`make model`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

recipe_app = typer.Typer(help="End-to-end recipes that build a shipped model.", no_args_is_help=True)
console = Console()
DEFAULT_CONFIG = Path("configs/recipe-sentiment.yaml")


@recipe_app.command("sentiment")
def sentiment(
    config: Path | None = typer.Option(None, "--config", "-c", help="Recipe YAML (default configs/recipe-sentiment.yaml when present)."),
    name: str | None = typer.Option(None, help="Installed model name (default tickerpulse-sentiment)."),
    model_dir: Path | None = typer.Option(None, help="Install here instead of <TICKERPULSE_HOME>/models/<name>."),
    shared_data: Path | None = typer.Option(None, help="Folder with the three public datasets (../shared/data)."),
    out: Path | None = typer.Option(None, help="Work folder (data, run, evals, report); rebuilt from scratch."),
    teacher: str | None = typer.Option(None, help="'gold' or an OpenAI-compatible base URL."),
    teacher_model: str | None = typer.Option(None, help="Model name for a real teacher."),
    limit_per_dataset: int | None = typer.Option(None, help="Read only N rows per source file (quick looks, tests)."),
    iters: int | None = typer.Option(None, help="Training steps (overrides train.iters)."),
    reasoning_limit: int | None = typer.Option(None, help="Served reasoning mode on a seeded sample of N items per test set."),
    generation_limit: int | None = typer.Option(None, help="Free (unconstrained) generation on a seeded sample of N items per test set."),
    injection_n: int | None = typer.Option(None, help="Posts in the injection test (default 100)."),
    seed: int | None = typer.Option(None, help="Seed for splits, sampling and training."),
    set_: list[str] = typer.Option([], "--set", help="Any recipe key, e.g. --set train.num_layers=8 (repeatable)."),
    evaluate_only: bool = typer.Option(False, "--evaluate-only", help="Keep the work folder's data and run and the "
                                       "installed student; calibrate, evaluate and write the card again."),
) -> None:
    """Data -> teacher -> LoRA -> fuse -> calibrate -> evaluate vs baselines -> model card (docs/recipe.md)."""
    from tickerpulse.config import parse_set_flags
    from tickerpulse.recipe.card import headline_markdown
    from tickerpulse.recipe.config import load_recipe_config
    from tickerpulse.recipe.sentiment import run_recipe

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    over = parse_set_flags(set_)
    flat = {"name": name, "model_dir": model_dir, "shared_data": shared_data, "out": out, "teacher": teacher,
            "teacher_model": teacher_model, "seed": seed}
    over.update({k: v for k, v in flat.items() if v is not None})
    if limit_per_dataset is not None:
        over.setdefault("splits", {})["limit_per_dataset"] = limit_per_dataset
    if iters is not None:
        over.setdefault("train", {})["iters"] = iters
    for key, val in (("reasoning_limit", reasoning_limit), ("generation_limit", generation_limit), ("injection_n", injection_n)):
        if val is not None:
            over.setdefault("eval", {})[key] = val
    cfg = load_recipe_config(config, over)
    card = run_recipe(cfg, log=lambda m: console.print(f"[bold cyan]recipe[/] {m}", highlight=False),
                      argv=["tickerpulse", *sys.argv[1:]], evaluate_only=evaluate_only)
    console.print(f"\n[bold]{card['name']}[/] built in {card['wall_time_s'] / 60:.1f} min: "
                  f"{cfg.install_dir}\n", highlight=False)
    typer.echo(headline_markdown(card))


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
