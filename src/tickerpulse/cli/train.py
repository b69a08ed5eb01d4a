"""`tickerpulse train`: fine-tune a model (LoRA / DoRA / QLoRA / full) from a YAML config plus flags."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (mlx-lm keys + ours, see configs/)."),
    model: str | None = typer.Option(None, help="Base model: built-in name, hub id or local HF folder."),
    data: str | None = typer.Option(None, help="Folder with train/valid/test.jsonl (chat, completions or text)."),
    fine_tune_type: str | None = typer.Option(None, help="lora, dora, qlora or full."),
    optimizer: str | None = typer.Option(None, help="adam, adamw, muon, sgd or adafactor (mlx-lm's; default adam)."),
    num_layers: int | None = typer.Option(None, help="Blocks to train counted from the top; -1 = all."),
    iters: int | None = typer.Option(None, help="Optimizer steps."),
    epochs: float | None = typer.Option(None, help="Train this many epochs instead of --iters."),
    time_budget: float | None = typer.Option(None, help="End training after this many seconds of steps; the lr "
                                             "schedule then decays in time (iters/epochs stay the upper bound)."),
    batch_size: int | None = typer.Option(None, help="Samples per micro-batch."),
    grad_accumulation_steps: int | None = typer.Option(None, help="Micro-batches per optimizer step."),
    learning_rate: float | None = typer.Option(None, help="Peak learning rate."),
    max_seq_length: int | None = typer.Option(None, help="Samples are cut to this many tokens; packed row size."),
    adapter_path: str | None = typer.Option(None, help="Run folder to write (adapters, checkpoints, metrics)."),
    resume: str | None = typer.Option(None, help="Continue this run folder exactly (optimizer, schedule, data, RNG)."),
    resume_adapter_file: str | None = typer.Option(None, help="Start a new run from these adapter weights."),
    steps_per_report: int | None = typer.Option(None, help="Report train loss every N steps."),
    steps_per_eval: int | None = typer.Option(None, help="Validate every N steps."),
    val_batches: int | None = typer.Option(None, help="Validation batches per evaluation; -1 = all."),
    save_every: int | None = typer.Option(None, help="Checkpoint every N steps."),
    early_stopping_patience: int | None = typer.Option(None, help="Stop after N evaluations without improvement."),
    seed: int | None = typer.Option(None, help="Random seed (data order, dropout, LoRA init)."),
    dtype: str | None = typer.Option(None, help="Frozen-base dtype: auto, float32, bfloat16, float16."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps."),
    backend: str | None = typer.Option(None, help="auto, torch or mlx."),
    mask_prompt: bool | None = typer.Option(None, "--mask-prompt/--no-mask-prompt",
                                            help="Train on assistant/completion tokens only (default on)."),
    packing: bool | None = typer.Option(None, "--packing/--no-packing", help="Pack samples into rows (default on)."),
    grad_checkpoint: bool | None = typer.Option(None, "--grad-checkpoint/--no-grad-checkpoint",
                                                help="Recompute activations in backward to save memory."),
    compile_: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile each transformer block "
                                         "(torch backend; 1.22x tokens/s on 2 CPU cores after ~40 s of compiling)."),
    train_: bool | None = typer.Option(None, "--train/--no-train", help="Train (default on; --no-train --test "
                                       "only evaluates)."),
    test: bool | None = typer.Option(None, "--test/--no-test", help="Report test loss/perplexity after training."),
    report_to: str | None = typer.Option(None, help="Comma-separated trackers: wandb, swanlab, mlflow, tensorboard."),
    project_name: str | None = typer.Option(None, help="Tracker project name."),
    clear_cache_threshold: str | None = typer.Option(None, help="Free cached accelerator memory after a step above "
                                                     "this size (bytes, or e.g. 2GB; 0 = every step)."),
    trust_remote_code: bool | None = typer.Option(None, "--trust-remote-code/--no-trust-remote-code",
                                                  help="Let transformers run a hub model's own code."),
    set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set lora_parameters.rank=16 (repeatable)."),
) -> None:
    """Fine-tune on a train/valid/test folder and write a self-describing run folder (docs/train.md)."""
    from tickerpulse.config import parse_set_flags
    from tickerpulse.train.api import resolve_config
    from tickerpulse.train.api import train as run_training

    flags = {
        "model": model, "data": data, "fine_tune_type": fine_tune_type, "num_layers": num_layers, "iters": iters,
        "epochs": epochs, "time_budget": time_budget, "batch_size": batch_size, "grad_accumulation_steps": grad_accumulation_steps,
        "learning_rate": learning_rate, "max_seq_length": max_seq_length, "adapter_path": adapter_path,
        "resume": resume, "resume_adapter_file": resume_adapter_file, "steps_per_report": steps_per_report,
        "steps_per_eval": steps_per_eval, "val_batches": val_batches, "save_every": save_every,
        "early_stopping_patience": early_stopping_patience, "seed": seed, "dtype": dtype, "device": device,
        "backend": backend, "mask_prompt": mask_prompt, "packing": packing, "grad_checkpoint": grad_checkpoint,
        "compile": compile_,
        "test": test, "report_to": report_to, "optimizer": optimizer, "train": train_, "project_name": project_name,
        "clear_cache_threshold": clear_cache_threshold, "trust_remote_code": trust_remote_code,
    }
    overrides = parse_set_flags(set_)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    cfg = resolve_config(config, overrides)
    try:
        result = run_training(cfg, argv=["tickerpulse", *sys.argv[1:]])
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: resume with `tickerpulse train --resume {cfg.adapter_path}`")
        raise typer.Exit(130) from None
    s = result.summary
    best = s.get("best_val_loss")
    tps = s.get("tokens_per_sec")
    console.print(
        f"[green]done[/] ({s.get('status')}): {result.run_dir}  best step {s.get('best_step')}"
        + (f", val loss {best:.4f}" if best is not None else "")
        + (f", {tps:.0f} tok/s" if tps else "")
        + (f", test loss {s['test_loss']:.4f} (ppl {s['test_ppl']:.3f})" if "test_loss" in s else "")
    )


def register(app: typer.Typer) -> None:
    app.command("train", help="Fine-tune a model with LoRA/DoRA/QLoRA or fully; writes a run folder.")(train)
