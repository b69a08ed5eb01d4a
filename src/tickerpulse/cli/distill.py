"""`tickerpulse distill`: label raw texts with a teacher (OpenAI-compatible endpoint or gold labels) into
chat JSONL train/valid/test for `tickerpulse train`, with a report. Logic lives in `tickerpulse.distill`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def distill(
    input: Optional[str] = typer.Option(None, "--input", "-i", help="Raw rows {id,text,label?,score?}: .jsonl/.csv, folder, or hub dataset id."),
    teacher: Optional[str] = typer.Option(None, help="'gold', or an OpenAI-compatible base URL (default $OPENAI_BASE_URL, else api.openai.com)."),
    teacher_model: Optional[str] = typer.Option(None, help="Model name at the endpoint (default gpt-4o-mini)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (train/valid/test.jsonl, report.json/md, rejects.jsonl)."),
    n_train: Optional[int] = typer.Option(None, help="Rows wanted in train (default 500)."),
    n_valid: Optional[int] = typer.Option(None, help="Rows wanted in valid (default 100)."),
    n_test: Optional[int] = typer.Option(None, help="Rows wanted in test (default 100)."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight (default 8)."),
    rpm: Optional[float] = typer.Option(None, help="Rate limit, requests per minute (token bucket) (default none)."),
    timeout: Optional[float] = typer.Option(None, help="Seconds per request (default 60)."),
    max_retries: Optional[int] = typer.Option(None, help="Retries on 429/5xx/timeouts/connection errors (default 6)."),
    max_invalid: Optional[int] = typer.Option(None, help="Answers tried with validation feedback before rejecting (default 3)."),
    response_format: Optional[str] = typer.Option(None, help="auto | json_schema | json_object | none (default auto = json_schema, stepping down on HTTP 400)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 0)."),
    max_tokens: Optional[int] = typer.Option(None, help="Max answer tokens (default 256)."),
    seed: Optional[int] = typer.Option(None, help="Selection/split seed, also sent to the teacher (default 0)."),
    prompt_version: Optional[str] = typer.Option(None, help="Prompt template under task/prompts (default sentiment-v3)."),
    drop_disagreements: Optional[bool] = typer.Option(None, "--drop-disagreements/--keep-disagreements", help="Drop rows whose teacher label differs from the gold label (and backfill) (default keep)."),
    near_dup_threshold: Optional[float] = typer.Option(None, help="Character 5-gram Jaccard for near-duplicates; 1 disables (default 0.8)."),
    drop_near_duplicates: Optional[bool] = typer.Option(None, "--drop-near-duplicates/--keep-near-duplicates", help="Keep one row per near-duplicate cluster instead of all in one split (default keep)."),
    cache: Optional[Path] = typer.Option(None, help="SQLite cache file (default <TICKERPULSE_HOME>/distill/cache.sqlite)."),
    retry_rejected: bool = typer.Option(False, "--retry-rejected", help="Ask again for rows the cache holds as rejected."),
    price_in: Optional[float] = typer.Option(None, help="USD per 1M prompt tokens (default known for gpt-4o-mini, gpt-4o, gpt-4.1*)."),
    price_out: Optional[float] = typer.Option(None, help="USD per 1M completion tokens."),
    api_key_env: Optional[str] = typer.Option(None, help="Env var with the API key (default TICKERPULSE_TEACHER_API_KEY, then OPENAI_API_KEY)."),
    limit: Optional[int] = typer.Option(None, help="Read at most this many input rows."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with any of these keys (flags win)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label raw texts with a teacher into chat JSONL train/valid/test (+ report). Cached and resumable:
    Ctrl-C stops after the requests in flight; rerun the same command to continue."""
    flags = {k: v for k, v in locals().items() if k not in {"config", "quiet"}}
    flags["retry_rejected"] = retry_rejected or None  # an unset flag must not override the YAML
    from tickerpulse.config import ConfigError, load
    from tickerpulse.distill.job import DistillConfig, Interrupted, run_distill

    if config is None and (input is None or out is None):
        raise ConfigError("--input and --out are required (or set input/out in --config)")
    cfg = load(DistillConfig, config, flags)
    console.print(
        f"[bold]distill[/] {escape(cfg.input)} -> {escape(str(cfg.out))}  teacher [cyan]{escape(cfg.teacher or 'default endpoint')}[/] "
        f"model [cyan]{escape(cfg.teacher_model)}[/]  targets train/valid/test {cfg.n_train}/{cfg.n_valid}/{cfg.n_test}  "
        f"concurrency {cfg.concurrency}{f'  rpm {cfg.rpm:g}' if cfg.rpm else ''}  prompt {cfg.prompt_version}",
        highlight=False,
    )
    bar = None if quiet else _Bar()
    try:
        with bar or _Null():
            report = run_distill(cfg, progress=bar, handle_signals=True, command=sys.argv)
    except Interrupted as exc:
        console.print(f"[yellow]interrupted:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # Ctrl-C while reading the input, before any request
        console.print("[yellow]interrupted[/] before labelling started", highlight=False)
        raise typer.Exit(130) from None
    c, a = report["counts"], report["agreement"]["written"]
    rate = f"{100 * a['rate']:.1f}%" if a["rate"] is not None else "n/a (no gold labels)"
    cost = report["cost_usd"]["this_run"]
    console.print(
        f"[green]wrote[/] {c['written']} to {escape(str(cfg.out))}  rejected {c['rejected']}  failed {c['failed']}  "
        f"dropped (disagree) {c['dropped_disagreements']}  agreement {rate}  cache hits {report['cache']['hits']}  "
        f"tokens {report['tokens']['this_run']}  cost {'$%.4f' % cost if cost is not None else 'unknown'}  "
        f"{report['timing']['seconds']} s",
        highlight=False,
    )
    if c.get("shortfall"):
        console.print(f"[yellow]shortfall:[/] the input ran out of usable rows: {c['shortfall']}", highlight=False)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Bar:
    """rich progress bar with ETA; totals grow when rejected rows are replaced."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("[bold]labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
        )
        self.task: Any = None
        self.counts = {"ok": 0, "rejected": 0, "failed": 0, "cached": 0}

    def __enter__(self) -> "_Bar":
        self.p.start()
        self.task = self.p.add_task("labelling", total=0, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.stop()

    def add(self, n: int) -> None:
        self.p.update(self.task, total=(self.p.tasks[0].total or 0) + n)

    def advance(self, outcome: Any, cached: bool) -> None:
        self.counts[outcome.status] += 1
        self.counts["cached"] += cached
        stats = " ".join(f"{k} {v}" for k, v in self.counts.items())
        self.p.update(self.task, advance=1, stats=stats)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
