"""`tickerpulse dashboard`: serve the live dashboard over a store (DuckDB file or Elasticsearch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def dashboard(
    db: Path | None = typer.Option(None, "--db", help="DuckDB store file [<dir>/store.duckdb]."),
    store: str | None = typer.Option(None, "--store", help="Store backend: duckdb | elasticsearch."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML with StreamConfig keys."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override any config key (repeatable)."),
    dir: Path | None = typer.Option(None, "--dir", help="Working folder of the embedded backends."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (127.0.0.1 keeps it local)."),
    port: int = typer.Option(8050, "--port", help="Port."),
    refresh_ms: int = typer.Option(1000, "--refresh-ms", min=100,
                                   help="How often the server looks for new data to push (and the page polls when "
                                        "its live connection is down)."),
) -> None:
    """Live sentiment dashboard: sentiment and mentions over time (zoom, hover values), top tickers (click to
    filter), latest posts, pipeline health; updates pushed over Server-Sent Events."""
    from tickerpulse.config import build, load_yaml, parse_set_flags
    from tickerpulse.stream import registry
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.dashboard.app import serve

    data = load_yaml(config) if config else {}
    cfg = build(StreamConfig, data, parse_set_flags(set_), {"db": db, "store": store, "dir": dir},
                source=str(config) if config else "flags")
    registry.hook("store", cfg.store)  # fail now (one red line) on an unknown/unavailable store
    console.print(f"dashboard: http://{host}:{port}/  (store {cfg.store}: {cfg.db if cfg.store == 'duckdb' else cfg.es_url})",
                  highlight=False)
    serve(lambda: registry.open_store(cfg, read_only=True), host=host, port=port, refresh_ms=refresh_ms)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
