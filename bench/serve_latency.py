#!/usr/bin/env python
"""`/v1/sentiment` latency and throughput vs. the baseline of transformers `generate`, one text at a time.

Starts `tickerpulse serve` as a subprocess on a free 127.0.0.1 port, then for each mode (fast, reasoning) and
concurrency (1, 8, 32) sends one-text requests from an asyncio client with that many in flight and records
per-request latency (p50/p95) and texts/s. The baseline loads the same model in this process (after the
server stopped) and calls `model.generate` greedily on the same prompt for each text, one at a time, with
room for the whole JSON answer. Texts: twitter-financial-news-sentiment valid-a from ../shared/data
(fallback: the package's sample headlines).

    python bench/serve_latency.py                        # smollm2-135m, both modes, concurrency 1/8/32
    python bench/serve_latency.py --modes fast --threads 2 --dtype bfloat16
Writes bench/results/serve_latency.json and prints a table with ratios against the baseline. The machine
load (1-minute load average before/after each run) is recorded: on a shared box the numbers move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "valid-a.jsonl"
SAMPLE = ROOT / "src" / "tickerpulse" / "data" / "samples" / "headlines.jsonl"
REQUESTS = {("fast", 1): 60, ("fast", 8): 160, ("fast", 32): 320, ("reasoning", 1): 12, ("reasoning", 8): 32,
            ("reasoning", 32): 64}


def load_texts(path: Path | None, n: int) -> tuple[list[tuple[str, str | None]], str]:
    from tickerpulse.task.tickers import extract_tickers

    src = path if path is not None else DATA if DATA.is_file() else SAMPLE
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    items = []
    for r in rows:
        tickers = r.get("tickers") or ([r["ticker"]] if r.get("ticker") else extract_tickers(r["text"]))
        items.append((r["text"], (tickers or [None])[0]))
    while len(items) < n:  # the tiny fallback sample is cycled
        items += items
    return items[:n], str(src)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_level(url: str, items: list, mode: str, conc: int, n: int, max_tokens: int) -> dict:
    import httpx

    sem = asyncio.Semaphore(conc)
    lat: list[float] = []
    errors = 0

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=conc + 4)) as c:
        async def one(i: int) -> None:
            nonlocal errors
            text, ticker = items[i % len(items)]
            body = {"items": [{"text": text, "ticker": ticker}], "mode": mode, "max_tokens": max_tokens}
            async with sem:
                t = time.perf_counter()
                r = await c.post("/v1/sentiment", json=body)
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200

        await asyncio.gather(*[one(i) for i in range(min(conc, 4))])  # warm-up (prefix cache, first batches)
        lat.clear()
        before = load1()
        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(n)])
        wall = time.perf_counter() - t0
    return {"mode": mode, "concurrency": conc, "requests": n, "errors": errors, "p50_s": pct(lat, 0.5),
            "p95_s": pct(lat, 0.95), "mean_s": statistics.mean(lat), "texts_per_s": n / wall, "wall_s": wall,
            "load1_before": before, "load1_after": load1()}


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "tickerpulse.cli.main", "serve", "--model", args.model, "--port", str(port),
           "--dtype", args.dtype, "--max-batch-size", str(args.max_batch_size), "--max-queue", "1024", "--timeout", "600"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for spec in args.adapter or []:
        cmd += ["--adapter", spec]
    env = {**os.environ, "TICKERPULSE_API_KEY": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


def baseline(args: argparse.Namespace, items: list, n: int) -> dict:
    """transformers `generate` on the full prompt, one text at a time (what a naive server does)."""
    import torch

    from tickerpulse.task.contract import build_messages, parse_answer
    from tickerpulse.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype=args.dtype)
    lat, valid = [], 0
    before = load1()
    for text, ticker in items[:n]:
        prompt = tok.apply_chat_template(build_messages(text, ticker), tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=args.baseline_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        lat.append(time.perf_counter() - t)
        answer, _ = parse_answer(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        valid += answer is not None
    return {"mode": "baseline-generate", "concurrency": 1, "requests": n, "p50_s": pct(lat, 0.5),
            "p95_s": pct(lat, 0.95), "mean_s": statistics.mean(lat), "texts_per_s": n / sum(lat),
            "schema_valid": valid / n, "max_new_tokens": args.baseline_tokens, "load1_before": before,
            "load1_after": load1()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", action="append", help="NAME=PATH, passed to the server (the first is the default model)")
    ap.add_argument("--data", type=Path, default=None, help="JSONL with text (+ tickers/ticker)")
    ap.add_argument("--modes", default="fast,reasoning")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    ap.add_argument("--max-tokens", type=int, default=24, help="reasoning tokens per answer")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--baseline-n", type=int, default=8)
    ap.add_argument("--baseline-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_latency.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    items, source = load_texts(args.data, 400)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results = []
    proc = start_server(args, port)
    try:
        for mode in args.modes.split(","):
            for conc in (int(c) for c in args.concurrency.split(",")):
                n = max(conc, int(REQUESTS.get((mode, conc), 8 * conc) * args.scale))
                res = asyncio.run(run_level(url, items, mode, conc, n, args.max_tokens))
                results.append(res)
                print(f"{mode:9s} c={conc:<3d} p50 {res['p50_s'] * 1000:7.0f} ms  p95 {res['p95_s'] * 1000:7.0f} ms  "
                      f"{res['texts_per_s']:6.1f} texts/s  (load {res['load1_before']}->{res['load1_after']})", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    base = baseline(args, items, args.baseline_n) if args.baseline_n > 0 else None
    if base:
        print(f"baseline  c=1   p50 {base['p50_s'] * 1000:7.0f} ms  p95 {base['p95_s'] * 1000:7.0f} ms  "
              f"{base['texts_per_s']:6.2f} texts/s  (generate, {args.baseline_tokens} new tokens max, "
              f"{base['schema_valid']:.0%} schema-valid)")
        for r in results:
            r["speedup_p50_vs_baseline"] = base["p50_s"] / r["p50_s"]
            r["throughput_vs_baseline"] = r["texts_per_s"] / base["texts_per_s"]
            print(f"  {r['mode']:9s} c={r['concurrency']:<3d} p50 x{r['speedup_p50_vs_baseline']:.1f} faster, "
                  f"throughput x{r['throughput_vs_baseline']:.1f}")
    out = {
        "model": args.model, "adapters": args.adapter or [], "dtype": args.dtype, "threads": args.threads,
        "reasoning_max_tokens": args.max_tokens, "texts": source, "results": results, "baseline": base,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load1_end": load1()},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
