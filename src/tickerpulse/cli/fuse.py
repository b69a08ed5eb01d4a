"""`tickerpulse fuse`: merge a trained adapter into its base and write one standalone HF model folder."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def fuse(
    adapter: Path = typer.Option(..., "--adapter-path", "--adapter",
                                 help="Training run folder, one checkpoint file in it, or a PEFT adapter folder "
                                 "(mlx-lm's flag; --adapter too)."),
    save_path: Path = typer.Option(..., "--save-path", help="Output folder for the standalone model."),
    model: str | None = typer.Option(None, "--model", help="Base model (default: the one the run was trained on)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (the base's dtype), float32, bfloat16 or float16."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Reload the result and compare logits with base + adapter."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --save-path."),
) -> None:
    """Merge LoRA/DoRA into the base (QLoRA: into the dequantized base) -> safetensors + tokenizer + chat
    template + generation config (EOS = the chat-turn terminator) + tickerpulse.json provenance."""
    from tickerpulse.export.fuse import fuse as run_fuse

    console.print(f"[bold]fuse[/]: {adapter} -> {save_path}")
    res = run_fuse(adapter, save_path, model=model, dtype=dtype, verify=verify, overwrite=overwrite,  # type: ignore[arg-type]
                   command=["tickerpulse", *sys.argv[1:]])
    step = f", step {res.step}" if res.step is not None else ""
    console.print(f"base {res.base}{step}, dtype {res.dtype}, stop tokens {res.stop_token_ids}")
    if res.max_abs_logit_diff is not None:
        console.print(f"verified: max |fused - (base + adapter)| logit = {res.max_abs_logit_diff:.2e} (fp32)")
    console.print(f"[green]wrote[/] {res.path} in {res.seconds:.1f}s")
    typer.echo(str(res.path))


def register(app: typer.Typer) -> None:
    app.command("fuse")(fuse)
