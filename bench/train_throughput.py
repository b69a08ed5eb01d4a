"""Training throughput: tickerpulse's torch backend vs the usual HF recipe (transformers Trainer + PEFT).

Same model (smollm2-135m, or `--model gemma3-270m`), same data (sentiment chat rows built from ../shared/data
twitter train), same tokenization and labels (prompt masked, the end-of-turn token trained), same LoRA (r=8,
alpha=16, every linear layer of every block), same batch size and max_seq_length 512. The HF recipe pads each
batch to its longest sample (DataCollatorForSeq2Seq) and computes fp32 logits for every position, as the
Trainer does by default.
Each variant runs in its own process so its peak RSS is its own.

    python bench/train_throughput.py                 # hf + ours, 16 steps of 8 samples each
    python bench/train_throughput.py --variants hf,ours,ours-fp32 --steps 32
    python bench/train_throughput.py --model gemma3-270m --variants hf-bf16,ours   # sliding-window layers
    python bench/train_throughput.py --variants ours,ours-compile --steps 40       # `compile: true`

Prints non-pad tokens/s, peak RSS and the ratio; writes JSON to bench/results/. Our variants also report
`steady_tokens_per_sec`, the rate after the first quarter of the steps (where `compile: true` compiles).
The machine may be shared: the JSON records the load average before and after each variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TICKERPULSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RANK, ALPHA, SEQ = 8, 16, 512


def build_data(rows: int, folder: Path) -> Path:
    """train.jsonl of `rows` sentiment chat rows from the twitter train split."""
    from tickerpulse.task.contract import LABEL_SCORES, build_messages, format_answer

    src = SHARED / "twitter-financial-news-sentiment" / "train.jsonl"
    if not src.is_file():
        sys.exit(f"shared data not found: {src} (set TICKERPULSE_SHARED_DATA)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as fh, open(folder / "train.jsonl", "w", encoding="utf-8") as out:
        for i, line in enumerate(fh):
            if i == rows:
                break
            r = json.loads(line)
            t = (r.get("tickers") or [None])[0]
            msgs = build_messages(r["text"], t) + [
                {"role": "assistant", "content": format_answer(t, r["label"], LABEL_SCORES[r["label"]])}]
            out.write(json.dumps({"messages": msgs}) + "\n")
    return folder


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_hf(model_name: str, data: Path, steps: int, batch: int, seed: int, bf16: bool = False) -> dict:
    """transformers Trainer + PEFT LoRA, fp32, padding to the longest sample of each batch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from tickerpulse.data.formats import load_jsonl
    from tickerpulse.models import resolve
    from tickerpulse.models.loading import load_tokenizer
    from tickerpulse.train.collate import Encoder

    path = resolve(model_name)
    tok = load_tokenizer(path)
    rows, fmt = load_jsonl(data / "train.jsonl")
    samples = Encoder(tok, max_seq_length=SEQ).encode_split(rows, fmt).samples
    dataset = [{"input_ids": s.input_ids, "attention_mask": [1] * len(s), "labels": s.labels} for s in samples]
    # hf-bf16: what an HF user does on a CPU with native bf16: bf16 base, fp32 adapters, Trainer(bf16=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    counted = {"tokens": 0, "computed": 0}
    base_collate = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)

    def collate(features):
        batch = base_collate(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        counted["computed"] += batch["attention_mask"].numel()
        return batch

    args = TrainingArguments(
        output_dir=str(data / "hf_out"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=2e-4,
        logging_steps=max(1, steps // 4), save_strategy="no", report_to=[], use_cpu=True, seed=seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, bf16=bf16,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    t0 = time.perf_counter()
    out = trainer.train()
    dt = time.perf_counter() - t0
    return {"tokens": counted["tokens"], "seconds": dt, "tokens_per_sec": counted["tokens"] / dt,
            "padding_waste": 1 - counted["tokens"] / max(counted["computed"], 1), "final_loss": out.training_loss}


def run_ours(model_name: str, data: Path, steps: int, batch: int, seed: int, dtype: str,
             compile: bool = False) -> dict:
    from tickerpulse.train.api import resolve_config, train

    run = data / f"ours-{dtype}{'-compile' if compile else ''}"
    cfg = resolve_config(None, {
        "model": model_name, "data": str(data), "adapter_path": str(run), "iters": steps, "batch_size": batch,
        "num_layers": -1, "max_seq_length": SEQ, "learning_rate": 2e-4, "dtype": dtype, "seed": seed,
        "lora_parameters": {"rank": RANK, "alpha": ALPHA, "dropout": 0.0, "keys": ["all-linear"]},
        "steps_per_report": max(1, steps // 4), "steps_per_eval": 10**6, "save_every": 10**6, "compile": compile,
    })
    s = train(cfg).summary
    windows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    later = windows[1:]  # every report window but the first
    steady = (sum(r["tokens"] for r in later) / sum(r["tokens"] / r["tokens_per_sec"] for r in later)
              if later else None)
    return {"tokens": s["train_tokens"], "seconds": s["train_time_s"], "tokens_per_sec": s["tokens_per_sec"],
            "steady_tokens_per_sec": steady, "padding_waste": s["padding_waste"], "base_dtype": s["base_dtype"],
            "final_loss": windows[-1]["loss"] if windows else None}


def worker(variant: str, model_name: str, data: Path, steps: int, batch: int, seed: int, threads: int) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if threads:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    if variant == "hf":
        res = run_hf(model_name, data, steps, batch, seed)
    elif variant == "hf-bf16":
        res = run_hf(model_name, data, steps, batch, seed, bf16=True)
    elif variant == "ours":
        res = run_ours(model_name, data, steps, batch, seed, "auto")
    elif variant == "ours-fp32":
        res = run_ours(model_name, data, steps, batch, seed, "float32")
    elif variant == "ours-compile":
        res = run_ours(model_name, data, steps, batch, seed, "auto", compile=True)
    else:
        sys.exit(f"unknown variant {variant}")
    res.update(variant=variant, peak_rss_mb=round(peak_rss_mb(), 1), threads=torch.get_num_threads(),
               load_avg_before=load_before, load_avg_after=os.getloadavg()[0])
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="built-in name or local HF folder, for both sides")
    ap.add_argument("--variants", default="hf,ours", help="comma-separated: hf, hf-bf16, ours, ours-fp32, "
                    "ours-compile")
    ap.add_argument("--rows", type=int, default=256, help="chat rows built from the twitter train split")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per variant")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads per variant (0 = torch default); "
                    "on a CPU shared with other jobs 1 avoids oversubscribed OpenMP barriers")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.model, Path(args.data), args.steps, args.batch_size, args.seed, args.threads)
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = build_data(args.rows, Path(tmp) / "data")
        for variant in args.variants.split(","):
            print(f"== {variant}: {args.steps} steps x {args.batch_size} samples, seq {SEQ}", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--model", args.model,
                                   "--data", str(data),
                                   "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                                   "--seed", str(args.seed), "--threads", str(args.threads)],
                                  capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{variant} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            results[variant] = json.loads(line[len("RESULT "):])
            r = results[variant]
            rate = r.get("steady_tokens_per_sec")
            steady = f" ({rate:.1f} after the first quarter)" if rate else ""
            print(f"   {r['tokens_per_sec']:.1f} non-pad tokens/s{steady}, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"padding {100 * r['padding_waste']:.1f}%, load avg {r['load_avg_before']:.1f}->"
                  f"{r['load_avg_after']:.1f}", flush=True)
    report = {"model": args.model, "rows": args.rows, "steps": args.steps, "batch_size": args.batch_size,
              "threads": args.threads or "torch default",
              "max_seq_length": SEQ, "lora": {"rank": RANK, "alpha": ALPHA, "targets": "all-linear, all blocks"},
              "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for ref in [r for r in ("hf", "hf-bf16") if r in results]:
        for v in [v for v in results if v.startswith("ours")]:
            report[f"ratio_{v}_vs_{ref}"] = results[v]["tokens_per_sec"] / results[ref]["tokens_per_sec"]
            print(f"{v} / {ref} = {report[f'ratio_{v}_vs_{ref}']:.2f}x")
    if "ours" in results and "ours-compile" in results:
        report["ratio_steady_ours-compile_vs_ours"] = (results["ours-compile"]["steady_tokens_per_sec"]
                                                       / results["ours"]["steady_tokens_per_sec"])
        print(f"ours-compile / ours after the first quarter = {report['ratio_steady_ours-compile_vs_ours']:.2f}x")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"train_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
