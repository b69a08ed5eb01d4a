"""`tickerpulse generate`: stream one answer from a model (optionally with a LoRA adapter) to stdout."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message (or the whole prompt with --raw)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Built-in name, hub id or local HF folder "
                                     "[default: the adapter run's base model, else smollm2-135m]."),
    adapter: Path | None = typer.Option(None, "--adapter-path", "--adapter",
                                        help="Run folder with a trained LoRA adapter (mlx-lm's flag; --adapter too)."),
    system: str | None = typer.Option(None, "--system-prompt", "--system",
                                      help="System message (chat template only; --system too)."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Stop after this many new tokens."),
    temp: float = typer.Option(0.0, "--temp", min=0.0, help="Sampling temperature; 0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (with --temp > 0)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k most likely tokens only (with --temp > 0); "
                              "0 = off."),
    min_p: float = typer.Option(0.0, "--min-p", min=0.0, max=1.0, help="Drop tokens less than min-p times as likely "
                                "as the top one (with --temp > 0); 0 = off."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable); not printed."),
    raw: bool = typer.Option(False, "--raw/--chat", help="Send the prompt as is instead of through the chat template."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp32 on CPU; bf16 where a model folder's serving.json asks for it and the CPU has native bf16), float32, bfloat16 or float16."),
    backend: str = typer.Option("auto", "--backend", help="auto (mlx on Apple Silicon with mlx installed, else "
                                "torch), torch or mlx (mlx-lm; a torch-trained LoRA run is converted)."),
) -> None:
    """Stream tokens with the model's chat template; print tokens/s and peak memory at the end (stderr)."""
    from tickerpulse.models.generate import stream_generate
    from tickerpulse.models.loading import load_model
    from tickerpulse.train.backends import select_backend

    if raw and system:
        raise typer.BadParameter("--system-prompt needs the chat template; drop --raw", param_hint="--system-prompt")
    backend = select_backend(backend)
    _quiet_transformers()
    if model is None:
        model = "smollm2-135m"
        if adapter is not None:
            from tickerpulse.models.adapters import read_run

            model = read_run(adapter).base_model
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if backend == "mlx":
        _generate_mlx(model, adapter, prompt if raw else messages, max_tokens, temp, top_p, seed, stop, top_k, min_p)
        return
    with err.status(f"loading {model}" + (f" + {adapter}" if adapter else "")):
        lm, tok = load_model(model, device=device, dtype=dtype, adapter=adapter)
    stream = stream_generate(lm, tok, prompt if raw else messages, max_tokens=max_tokens, temperature=temp,
                             top_p=top_p, seed=seed, stop=stop or None, top_k=top_k, min_p=min_p)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = stream.stats
    assert s is not None  # set when the stream ends
    err.print(
        f"[dim]prompt {s.prompt_tokens} tok ({s.prompt_tokens_per_s:.1f} tok/s) | generated {s.generated_tokens} tok, "
        f"{s.tokens_per_s:.1f} tok/s | first token {s.ttft:.2f}s | total {s.seconds:.2f}s | "
        f"peak memory {s.peak_memory_mb:.0f} MiB | finish: {s.finish_reason}[/]",
        highlight=False,
    )


def _generate_mlx(model: str, adapter: Path | None, prompt: str | list[dict[str, str]], max_tokens: int, temp: float,
                  top_p: float, seed: int | None, stop: list[str], top_k: int = 0, min_p: float = 0.0) -> None:
    """The same command on mlx-lm (`--backend mlx`)."""
    from tickerpulse.models.mlx import stream_generate_mlx

    s: dict = {}
    for piece in stream_generate_mlx(model, adapter, prompt, max_tokens=max_tokens, temperature=temp, top_p=top_p,
                                     seed=seed, stop=stop or None, top_k=top_k, min_p=min_p):
        if isinstance(piece, dict):
            s = piece
            continue
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    err.print(
        f"[dim]mlx | prompt {s['prompt_tokens']} tok ({s['prompt_tps']:.1f} tok/s) | generated "
        f"{s['generated_tokens']} tok, {s['tokens_per_s']:.1f} tok/s | peak memory {s['peak_memory_mb']:.0f} MiB | "
        f"finish: {s['finish_reason']}[/]",
        highlight=False,
    )


def _quiet_transformers() -> None:
    """No weight-loading progress bars between the user's command and the answer."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - older transformers
        pass


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
