"""`tickerpulse serve`: the OpenAI-compatible server with `/v1/sentiment` (see docs/serve.md)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def serve(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base, fused or named model (name, hub id or folder)."),
    adapter: list[str] = typer.Option([], "--adapter-path", "--adapter",
                                      help="NAME=PATH of a run/adapter folder; repeat for several (--adapter too)."),
    default_model: str = typer.Option(None, "--default-model", help="Model for requests that name none (default: first adapter, else the base)."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default; set TICKERPULSE_API_KEY before exposing it)."),
    port: int = typer.Option(8080, help="Port."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps."),
    dtype: str = typer.Option("auto", help="auto (fp32 on CPU; bf16 where the model folder's serving.json asks for it and the CPU has native bf16) | float32 | bfloat16 | float16."),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    prompt_version: str = typer.Option(None, "--prompt-version", help="Sentiment prompt the model was trained with (default: its serving.json's, else the task's default)."),
    reasoning: str = typer.Option(None, "--reasoning", help="evidence | generated: what reasoning mode returns (default: serving.json's, else generated)."),
    max_batch_size: int = typer.Option(32, help="Most rows per model batch."),
    max_queue: int = typer.Option(256, help="Most queued requests; more get HTTP 429."),
    max_queue_items: int = typer.Option(4096, help="Most queued work items (sentiment (text, ticker) pairs + generated outputs); more get HTTP 429."),
    timeout: float = typer.Option(60.0, help="Seconds per request before HTTP 504."),
    max_body_bytes: int = typer.Option(2_000_000, help="Largest request body; more get HTTP 413."),
    batch_window_ms: float = typer.Option(3.0, help="Milliseconds to gather concurrent requests into a batch."),
) -> None:
    """Serve a model (+ adapters) over HTTP: /v1/models, /v1/chat/completions, /v1/completions, /v1/sentiment."""
    # Before torch loads: OpenMP threads that spin while waiting make every op many times slower as soon as
    # another process competes for the cores; passive waiting costs nothing when the machine is idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tickerpulse.config import ConfigError, build
    from tickerpulse.serve.app import ServeConfig, run
    from tickerpulse.serve.security import API_KEY_ENV, LOOPBACK, api_key_from_env

    adapters: dict[str, str] = {}
    for spec in adapter:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=PATH")
        if name in adapters:
            raise ConfigError(f"--adapter: name {name!r} given twice")
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"--adapter {name}: no such folder: {path}")
        adapters[name] = path
    cfg = build(ServeConfig, {
        "model": model, "adapters": adapters, "default_model": default_model, "host": host, "port": port,
        "device": device, "dtype": dtype, "threads": threads, "prompt_version": prompt_version, "reasoning": reasoning,
        "max_batch_size": max_batch_size, "max_queue": max_queue,
        "max_queue_items": max_queue_items,
        "timeout": timeout, "max_body_bytes": max_body_bytes, "batch_window_ms": batch_window_ms,
    }, source="flags")
    if host not in LOOPBACK and not api_key_from_env():
        console.print(f"[yellow]warning:[/] binding {host} without an API key: set {API_KEY_ENV} to require one")
    console.print(f"serving [bold]{model}[/] adapters={list(adapters) or 'none'} on http://{host}:{port} "
                  f"(API key {'required' if api_key_from_env() else 'off'})")
    run(cfg)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
