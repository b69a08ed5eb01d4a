#!/usr/bin/env python
"""Embedded pipeline throughput: posts/s end to end and lag percentiles on a replay corpus.

For each scorer (vader baseline, the model in fast mode, the model with reasoning) on a fresh SQLite bus +
DuckDB store: load the scorer (timed apart), then start the clock, produce the corpus (all at once, or at
`--rate` posts/s) while the local processor consumes it in micro-batches, and stop the clock when the last
offset is committed. Lag = processed_at - ingested_at of every stored document (client-side percentiles).

    python bench/stream_throughput.py                       # tfns train from ../shared/data
    python bench/stream_throughput.py --file posts.jsonl --runs vader,fast --posts 500
Writes bench/results/stream_throughput.json (and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.jsonl"
RUNS = {  # name -> (scorer, mode, default posts)
    "vader": ("vader", "fast", 3000),
    "fast": ("engine", "fast", 400),
    "reasoning": ("engine", "reasoning", 60),
    # the user path: `tickerpulse stream run` (separate producer/processor processes, store reopened per batch)
    "vader-cli": ("vader", "fast", 3000),
}


def bench_one(name: str, corpus: Path, posts: int, rate: float, model: str, max_records: int, score_batch: int) -> dict:
    from tickerpulse.stream.bus.sqlite import SqliteBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.processor import run_processor
    from tickerpulse.stream.produce import run_source
    from tickerpulse.stream.scoring import make_scorer
    from tickerpulse.stream.sources.replay import ReplaySource
    from tickerpulse.stream.store.base import percentiles
    from tickerpulse.stream.store.duckdb import DuckDBStore

    scorer_kind, mode, _ = RUNS[name]
    work = Path(tempfile.mkdtemp(prefix=f"tp-bench-{name}-"))
    cfg = StreamConfig(dir=work, scorer=scorer_kind, mode=mode, model=model, max_records=max_records,
                       score_batch=score_batch, poll_timeout=0.05)
    t = time.perf_counter()
    scorer = make_scorer(cfg.scorer, model=cfg.model, mode=cfg.mode, batch_size=cfg.score_batch)
    load_s = time.perf_counter() - t
    items = list(ReplaySource(corpus, speed=0, limit=posts).iter_posts())
    # Reference: the scorer alone on the first (post, ticker) items, warm, same batch size (what the
    # pipeline could reach if it added nothing). Under a loaded machine this moves with the load too.
    from tickerpulse.task.tickers import extract_tickers

    probe = [(p.text, t) for p in items for t in extract_tickers(p.text)][: max(score_batch, 32 if scorer_kind == "vader" else score_batch)]
    scorer.score(probe[:2])
    t = time.perf_counter()
    for i in range(0, len(probe), score_batch):
        scorer.score(probe[i : i + score_batch])
    direct = len(probe) / max(1e-9, time.perf_counter() - t)
    bus = SqliteBus(cfg.bus_path)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    store = DuckDBStore(cfg.db, persistent=True)  # one process: keep the connection (the CLI path reopens)
    stop = threading.Event()
    totals: dict = {}
    proc = threading.Thread(target=lambda: totals.update(run_processor(cfg, stop=stop, scorer=scorer, bus=bus, store=store)))

    def paced():
        t0 = time.perf_counter()
        for i, p in enumerate(items):
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield p

    t0 = time.perf_counter()
    proc.start()
    produced = run_source(paced(), bus, cfg.topic)
    end = bus.end_offsets(cfg.topic)[0]
    while bus.committed(cfg.group, cfg.topic).get(0, 0) < end:
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    stop.set()
    proc.join()
    sample = store.latency_sample(10**7)
    counts = store.counts()
    store.close()
    bus.close()
    scorer.close()
    lags = [s["lag_ms"] for s in sample]
    model_ms = [s["latency_ms"] for s in sample]
    return {
        "run": name, "scorer": scorer_kind, "mode": mode, "model_version": scorer.model_version,
        "posts": produced.produced, "items": counts["docs"], "posts_with_ticker": counts["posts_with_ticker"],
        "dead_letters": counts["dead_letters"], "wall_s": round(wall, 2), "load_s": round(load_s, 2),
        "posts_per_s": round(produced.produced / wall, 2), "items_per_s": round(counts["docs"] / wall, 2),
        "scorer_alone_items_per_s": round(direct, 2),
        "lag_ms": percentiles(lags, (50, 90, 95, 99)), "model_call_ms": percentiles(model_ms, (50, 95)),
        "batches": totals.get("batches"), "rate": rate or "all at once", "max_records": max_records,
        "score_batch": score_batch,
    }


def bench_cli(name: str, corpus: Path, posts: int, max_records: int) -> dict:
    """`tickerpulse stream run --exit-when-done` as a user runs it; times come from the store (processor
    ready or first ingest, whichever is later -> last processed post), so process start-up is not counted.
    Lag includes the wait for the processor to start (the producer is faster to start)."""
    import subprocess

    import duckdb

    from tickerpulse.stream.store.base import percentiles
    from tickerpulse.stream.store.duckdb import DuckDBStore

    work = Path(tempfile.mkdtemp(prefix=f"tp-bench-{name}-"))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", "stream", "run", "--file", str(corpus), "--speed", "0",
                    "--limit", str(posts), "--scorer", "vader", "--dir", str(work), "--no-dashboard", "--exit-when-done",
                    "--set", f"max_records={max_records}"], check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t
    con = duckdb.connect(str(work / "store.duckdb"), read_only=True)
    n, first, last = con.execute("SELECT COUNT(*), MIN(ingested_at), MAX(processed_at) FROM posts").fetchone()
    con.close()
    store = DuckDBStore(work / "store.duckdb", read_only=True)
    counts, sample = store.counts(), store.latency_sample(10**7)
    from tickerpulse.stream.schema import to_utc

    # The clock starts when both ends are up: the processor's start-up (imports) is not throughput.
    started = to_utc(store.heartbeats()["processor"]["started_at"]).replace(tzinfo=None)
    wall = (last - max(first, started)).total_seconds()
    return {
        "run": name, "scorer": "vader", "mode": "fast", "model_version": "vader-3.3.2", "posts": n,
        "items": counts["docs"], "posts_with_ticker": counts["posts_with_ticker"], "dead_letters": counts["dead_letters"],
        "wall_s": round(wall, 2), "load_s": None, "command_s": round(total, 2),
        "posts_per_s": round(n / wall, 2), "items_per_s": round(counts["docs"] / wall, 2),
        "lag_ms": percentiles([s["lag_ms"] for s in sample], (50, 90, 95, 99)),
        "model_call_ms": percentiles([s["latency_ms"] for s in sample], (50, 95)),
        "batches": None, "rate": "all at once", "max_records": max_records, "score_batch": 16,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="posts/s and lag of the embedded stream pipeline")
    ap.add_argument("--file", type=Path, default=DEFAULT_CORPUS, help="replay corpus (JSONL/CSV with text)")
    ap.add_argument("--runs", default="vader,vader-cli,fast,reasoning", help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--posts", type=int, default=None, help="posts per run (default: vader 3000, fast 400, reasoning 60)")
    ap.add_argument("--rate", type=float, default=0.0, help="producer posts/s (0 = all at once: max throughput)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-records", type=int, default=256)
    ap.add_argument("--score-batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream_throughput.json")
    args = ap.parse_args()
    if not args.file.is_file():
        from tickerpulse.stream.sources.replay import sample_corpus

        print(f"{args.file} not found: using the packaged sample corpus", file=sys.stderr)
        args.file = sample_corpus()
    results = []
    load0 = os.getloadavg()
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}: {', '.join(RUNS)}")
        n = args.posts or RUNS[name][2]
        print(f"[{name}] {n} posts from {args.file.name} ...", file=sys.stderr, flush=True)
        if name.endswith("-cli"):
            r = bench_cli(name, args.file, n, args.max_records)
        else:
            r = bench_one(name, args.file, n, args.rate, args.model, args.max_records, args.score_batch)
        results.append(r)
        print(f"[{name}] {r['posts_per_s']} posts/s, {r['items_per_s']} items/s, lag p50 {r['lag_ms'].get('p50')} ms "
              f"p95 {r['lag_ms'].get('p95')} ms ({r['wall_s']} s)", file=sys.stderr, flush=True)
    out = {"benchmark": "stream_throughput", "corpus": str(args.file), "python": platform.python_version(),
           "cpus": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"{'run':<10} {'posts':>6} {'items':>6} {'posts/s':>9} {'items/s':>8} {'lag p50':>9} {'lag p95':>9} {'lag p99':>9}")
    for r in results:
        lag = r["lag_ms"]
        print(f"{r['run']:<10} {r['posts']:>6} {r['items']:>6} {r['posts_per_s']:>9} {r['items_per_s']:>8} "
              f"{lag.get('p50', '-'):>9} {lag.get('p95', '-'):>9} {lag.get('p99', '-'):>9}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
