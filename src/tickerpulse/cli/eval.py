"""`tickerpulse eval`: task metrics of any labeler: free generation (default), the served modes in-process
(`--mode fast|reasoning`), a running server (`--url`); or test loss/perplexity (`--test`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from tickerpulse.cli import _gen_options as opt

if TYPE_CHECKING:
    from tickerpulse.evaluate.result import EvalResult

console = Console()


def eval_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Base model: built-in name, hub id or local HF folder."),
    adapter: str | None = typer.Option(None, "--adapter-path", "--adapter",
                                       help="Training run folder whose adapter is applied (mlx-lm's flag; --adapter too)."),
    data: str | None = opt.DATA,
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
    stop: list[str] = typer.Option([], "--stop", help="Extra stop string (repeatable)."),
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder [default: runs/eval-<time>]."),
    test: bool = typer.Option(False, "--test", help="Instead: test loss and perplexity (teacher-forced, as in training) on <data>/<split>.jsonl."),
    test_batches: int = typer.Option(-1, help="With --test: batches to evaluate (-1 = all)."),
    max_seq_length: int | None = typer.Option(None, help="With --test: truncate longer samples [default: the run's, else 2048]."),
    mode: str | None = typer.Option(None, "--mode", help="generate (free generation of the whole answer, the default) "
                                    "| fast | reasoning (the served sentiment modes: in-process, or the server at --url "
                                    "[default there: fast])."),
    url: str | None = typer.Option(None, "--url", help="Measure a running `tickerpulse serve` at this URL through "
                                   "/v1/sentiment (API key from TICKERPULSE_API_KEY) instead of loading a model."),
    quiet: bool = opt.QUIET,
) -> None:
    """Answer every item and score the answers: JSON/schema validity, accuracy, macro-F1, per-class
    precision/recall, confusion matrix, score MAE/Pearson/Spearman, ticker P/R, latency (and tokens/s when
    generating). Writes eval.json (metrics + per-item answers) and eval.md."""
    from tickerpulse.config import ConfigError, build

    if data is None:
        raise ConfigError("--data is required (a .jsonl file or a folder with test.jsonl)")
    if test:
        if model is None:
            raise ConfigError("--test needs --model")
        _test_loss(model, adapter, data, split, batch_size, test_batches, max_seq_length, device, dtype, out)
        return
    from tickerpulse.evaluate.runner import EvalConfig, evaluate

    cfg = build(EvalConfig, {
        "mode": mode or ("fast" if url else "generate"), "url": url,
        "model": model, "adapter": adapter, "data": data, "split": split, "limit": limit, "task": task,
        "prompt_ticker": prompt_ticker, "batch_size": batch_size, "max_tokens": max_tokens, "temperature": temp,
        "top_p": top_p, "seed": seed, "stop": stop, "metrics": metric, "regex": regex, "device": device,
        "dtype": dtype, "out": str(out or Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")),
    }, source="flags")
    labeler = None
    if cfg.mode != "generate" and cfg.url is None:
        from tickerpulse.serve.engine import SentimentEngine
        from tickerpulse.serve.labeler import EngineLabeler

        engine = SentimentEngine(cfg.model, adapter=cfg.adapter, device=device, dtype=dtype)
        # every item in one engine call (an item's latency is the whole call's), as the recipe measures its card
        labeler = EngineLabeler(engine, cfg.mode, max_tokens=cfg.max_tokens, batch_size=None, name="eval",  # type: ignore[arg-type]
                                system={"adapter": cfg.adapter})
    result = evaluate(cfg, labeler=labeler, progress=not quiet)
    _print_summary(result)
    console.print(f"wrote [bold]{cfg.out}/eval.json[/] and eval.md")


def _print_summary(result: "EvalResult") -> None:
    from rich.table import Table

    from tickerpulse.evaluate.report import fmt, metric_rows

    cfg = result.config
    what = cfg.get("url") or cfg.get("model")
    table = Table(title=f"{what}" + (f" + {cfg['adapter']}" if cfg.get("adapter") else "") + f" ({cfg.get('mode')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, values, kind, _ in metric_rows([result]):
        table.add_row(label, fmt(values[0], kind))
    console.print(table)


def _test_loss(model: str, adapter: str | None, data: str, split: str, batch_size: int, test_batches: int,
               max_seq_length: int | None, device: str, dtype: str, out: Path | None) -> None:
    import json

    from tickerpulse.train.evaluate import test_loss

    folder = Path(data)
    if folder.is_file():  # a single file: its folder, and the split its name says (test.jsonl -> test)
        folder, split = folder.parent, folder.stem
    result = test_loss(model, adapter, folder, split=split, batch_size=batch_size, num_batches=test_batches,
                       max_seq_length=max_seq_length, device=device, dtype=dtype if dtype != "auto" else "float32")
    console.print(f"Test loss {result['loss']:.3f}, Test ppl {result['ppl']:.3f} "
                  f"({result['tokens']} trained tokens, split {result['split']}).")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "test_loss.json").write_text(json.dumps({**result, "model": model, "adapter": adapter,
                                                        "data": str(folder)}, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
