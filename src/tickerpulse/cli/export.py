"""`tickerpulse export gguf|check`: write a GGUF for llama.cpp and check it answers like the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

export_app = typer.Typer(help="Export a model folder to other runtimes (GGUF for llama.cpp).", no_args_is_help=True)
console = Console(stderr=True)

_ENGINE_HELP = "Round-trip engine(s): transformers, llama.cpp or all (llama.cpp is skipped if not installed)."


@export_app.command("gguf")
def gguf(
    model: str = typer.Option(..., "--model", help="HF model folder (e.g. from `tickerpulse fuse`), built-in name or hub id."),
    outtype: str = typer.Option("f16", "--outtype", help="f16, q8_0, bf16 or f32."),
    out: Path | None = typer.Option(None, "--outfile", "--out",
                                    help="Output file, as llama.cpp's convert_hf_to_gguf.py names it (--out too) "
                                    "[default: MODEL/<name>-<OUTTYPE>.gguf]."),
    check: bool = typer.Option(False, "--check", help="Read the GGUF back and compare greedy answers with PyTorch."),
    engine: str = typer.Option("all", "--engine", help=_ENGINE_HELP),
    tokenizer_pre: str | None = typer.Option(None, "--tokenizer-pre", help="llama.cpp pre-tokenizer name, if not detected."),
    report: Path | None = typer.Option(None, "--report", help="Write the round-trip report as JSON here."),
) -> None:
    """Write one GGUF (chat template, BOS/EOS/pad and tokenizer kept); optionally round-trip check it."""
    from tickerpulse.export.gguf import export_gguf

    res = export_gguf(model, out, outtype, tokenizer_pre=tokenizer_pre)  # type: ignore[arg-type]
    console.print(f"[green]wrote[/] {res.path} ({res.arch}, {res.outtype}, {res.tensors} tensors, "
                  f"{res.size_bytes / 2**20:.1f} MiB) in {res.seconds:.1f}s")
    typer.echo(str(res.path))
    if check:
        _run_check(res.path, model, engine, report)


@export_app.command("check")
def check(
    gguf_file: Path = typer.Argument(..., help="The GGUF file."),
    model: str = typer.Option(..., "--model", help="The HF folder it was exported from (the PyTorch reference)."),
    engine: str = typer.Option("all", "--engine", help=_ENGINE_HELP),
    report: Path | None = typer.Option(None, "--report", help="Write the report as JSON here."),
) -> None:
    """Round-trip check an existing GGUF against the PyTorch model it came from."""
    _run_check(gguf_file, model, engine, report)


def _run_check(gguf_file: Path, model: str, engine: str, report: Path | None) -> None:
    from tickerpulse.export.roundtrip import ENGINES, check_gguf

    engines = ENGINES if engine == "all" else tuple(e.strip() for e in engine.split(","))
    console.print(f"[bold]round trip[/]: {gguf_file.name} vs PyTorch fp32 ({', '.join(engines)}) ...")
    rep = check_gguf(gguf_file, model, engines=engines)
    table = Table(title=f"GGUF round trip ({rep.weight_type})")
    for col in ("engine", "answers identical", "agree", "checks", "tokens/s (40-token answer)"):
        table.add_column(col)
    for e in rep.engines:
        if e.skipped:
            table.add_row(e.engine, "-", "-", f"[yellow]skipped: {e.skipped}[/]", "-")
            continue
        bad = [k for k, v in e.checks.items() if v is False]
        checks = "[green]ok[/]" if not bad else f"[red]failed: {', '.join(bad)}[/]"
        if "max_abs_logit_diff" in e.checks:
            checks += f" (max logit diff {e.checks['max_abs_logit_diff']:.3g})"
        speed = "-" if e.tokens_per_s is None else f"{e.tokens_per_s:.1f} (PyTorch fp32 {rep.reference_tokens_per_s:.1f})"
        table.add_row(e.engine, f"{e.identical}/{len(e.answers)}", f"{e.agree}/{len(e.answers)}", checks, speed)
    console.print(table)
    for e in rep.engines:
        for a in e.answers:
            if not a.identical:
                console.print(f"[yellow]{e.engine}[/] differs at token {a.first_diff_token} "
                              f"(reference margin {a.tie_margin}):\n  ref: {a.reference!r}\n  got: {a.candidate!r}")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
    if not rep.ok:
        console.print("[bold red]round trip FAILED[/]")
        raise typer.Exit(1)
    console.print("[bold green]round trip passed[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
