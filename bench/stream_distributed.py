#!/usr/bin/env python
"""Kafka + Spark + Elasticsearch vs the embedded pipeline: posts/s on the same corpus with the same scorer,
and Spark's fixed cost per micro-batch.

Both paths drain the same backlog: the corpus is produced to the bus first (timed apart), then the clock
runs from "processor starts" to "last record committed":
  - embedded:    SQLite bus -> local processor (this process) -> DuckDB
  - distributed: Kafka (noida-db, 2 partitions = local[2]'s cores) -> Spark Structured Streaming local[2] (our Kafka reader,
                 pandas-UDF scoring, foreachBatch) -> Elasticsearch (noida-db), trigger availableNow;
                 the SparkSession start is timed apart (paid once per job, not per post).
Spark per-batch overhead: the same job over a topic of 1-record batches (maxOffsetsPerTrigger=1): the
median batch time is what every micro-batch costs before any real work (planning, offsets, three Python
worker round trips, the foreachBatch job, one bulk request, checkpoint commits).

    python bench/stream_distributed.py                          # vader on 3000 tweets of ../shared/data
    python bench/stream_distributed.py --runs vader,fast --posts 400
Writes bench/results/stream_distributed.json (and prints a table). Needs the stream extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.jsonl"
RUNS = {"vader": ("vader", "fast", 3000), "fast": ("engine", "fast", 300)}  # name -> (scorer, mode, posts)


def embedded(posts: list, scorer_kind: str, mode: str, model: str, max_records: int) -> dict:
    from tickerpulse.stream.bus.sqlite import SqliteBus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.processor import run_processor
    from tickerpulse.stream.produce import run_source
    from tickerpulse.stream.scoring import make_scorer
    from tickerpulse.stream.store.duckdb import DuckDBStore

    work = Path(tempfile.mkdtemp(prefix="tp-bench-embedded-"))
    cfg = StreamConfig(dir=work, scorer=scorer_kind, mode=mode, model=model, max_records=max_records, poll_timeout=0.05)
    scorer = make_scorer(cfg.scorer, model=cfg.model, mode=cfg.mode, batch_size=cfg.score_batch)
    bus = SqliteBus(cfg.bus_path)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    t = time.perf_counter()
    run_source(posts, bus, cfg.topic)
    produce_s = time.perf_counter() - t
    store = DuckDBStore(cfg.db, persistent=True)
    stop = threading.Event()
    end = bus.end_offsets(cfg.topic)[0]
    totals: dict = {}
    t0 = time.perf_counter()
    th = threading.Thread(target=lambda: totals.update(run_processor(cfg, stop=stop, scorer=scorer, bus=bus, store=store)))
    th.start()
    while bus.committed(cfg.group, cfg.topic).get(0, 0) < end:
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    counts = store.counts()
    store.close()
    bus.close()
    scorer.close()
    return {"path": "embedded (sqlite + local + duckdb)", "posts": len(posts), "docs": counts["docs"],
            "produce_s": round(produce_s, 2), "wall_s": round(wall, 2), "posts_per_s": round(len(posts) / wall, 1),
            "docs_per_s": round(counts["docs"] / wall, 1), "batches": totals.get("batches"), "max_records": max_records}


def _spark_cfg(work: Path, noida, topic: str, index: str, scorer_kind: str, mode: str, model: str, max_offsets: int):
    from tickerpulse.stream.config import StreamConfig

    return StreamConfig(dir=work, bus="kafka", kafka_bootstrap=noida.kafka, topic=topic, store="elasticsearch",
                        es_url=noida.es_url, es_index=index, processor="spark", scorer=scorer_kind, mode=mode,
                        model=model, max_records=max_offsets, store_options={"refresh": "false"},
                        processor_options={"available_now": True})


def distributed(posts: list, scorer_kind: str, mode: str, model: str, max_offsets: int, noida, spark,
                partitions: int = 2) -> dict:
    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.produce import run_source
    from tickerpulse.stream.spark.job import run_processor
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    work = Path(tempfile.mkdtemp(prefix="tp-bench-spark-"))
    topic, index = f"bench-{scorer_kind}-{mode}-{os.getpid()}", f"bench-{scorer_kind}-{mode}-{os.getpid()}"
    cfg = _spark_cfg(work, noida, topic, index, scorer_kind, mode, model, max_offsets)
    bus = KafkaBus(noida.kafka, partitions=partitions)
    bus.ensure_topics([topic, cfg.dead_letter_topic])
    t = time.perf_counter()
    run_source(posts, bus, topic)
    produce_s = time.perf_counter() - t
    t0 = time.perf_counter()
    totals = run_processor(cfg, spark=spark)
    wall = time.perf_counter() - t0
    store = ElasticsearchStore(noida.es_url, index, read_only=True)
    store.refresh_now()
    docs = store.counts()["docs"]
    store.close()
    bus.close()
    batch_ms = totals["batch_ms"]
    steady = batch_ms[1:] or batch_ms  # batch 0 also starts the Python workers and loads the scorer there
    steady_rows = totals["records"] * len(steady) / max(1, len(batch_ms))
    return {"path": "distributed (kafka + spark local[2] + elasticsearch)", "posts": len(posts), "docs": docs,
            "produce_s": round(produce_s, 2), "wall_s": round(wall, 2), "posts_per_s": round(len(posts) / wall, 1),
            "docs_per_s": round(docs / wall, 1), "batches": totals["batches"], "max_offsets_per_trigger": max_offsets,
            "partitions": partitions, "startup_s": totals.get("startup_s"),
            "batch_ms": batch_ms, "first_batch_ms": batch_ms[0] if batch_ms else None,
            "steady_posts_per_s": round(steady_rows / (sum(steady) / 1000), 1) if steady else None}


def batch_overhead(noida, spark, batches: int = 12) -> dict:
    """Median wall time of 1-record micro-batches (vader, so the model costs ~nothing), from Spark's own
    progress reports (triggerExecution and its parts) and from our foreachBatch timer."""
    from pyspark.sql.streaming import StreamingQuery  # noqa: F401 - fail early without pyspark

    from tickerpulse.stream.bus.kafka import KafkaBus
    from tickerpulse.stream.produce import run_source
    from tickerpulse.stream.spark.job import BatchTracker, spark_options, start_query
    from tickerpulse.stream.sources.replay import sample_corpus, ReplaySource
    from tickerpulse.stream.store.elasticsearch import ElasticsearchStore

    work = Path(tempfile.mkdtemp(prefix="tp-bench-overhead-"))
    topic = f"bench-overhead-{os.getpid()}"
    cfg = _spark_cfg(work, noida, topic, topic, "vader", "fast", "smollm2-135m", 1)
    bus = KafkaBus(noida.kafka, partitions=1)
    bus.ensure_topics([topic, cfg.dead_letter_topic])
    run_source(list(ReplaySource(sample_corpus(), speed=0, limit=batches + 2).iter_posts()), bus, topic)
    store = ElasticsearchStore(noida.es_url, topic)
    tracker = BatchTracker(cfg, store, {"bench": "overhead"})
    query = start_query(cfg, spark_options(cfg), tracker, spark)
    query.awaitTermination()
    progress = [p for p in query.recentProgress if p.get("numInputRows")][2:]  # skip warm-up batches
    store.close()
    bus.close()
    parts = {}
    for key in ("triggerExecution", "latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets"):
        vals = [p["durationMs"].get(key) for p in progress if p["durationMs"].get(key) is not None]
        if vals:
            parts[key] = statistics.median(vals)
    fb = tracker.batch_ms[2:]
    return {"batches_measured": len(progress), "median_batch_ms": parts.get("triggerExecution"),
            "median_parts_ms": parts, "median_foreach_batch_ms": round(statistics.median(fb), 1) if fb else None}


def main() -> None:
    ap = argparse.ArgumentParser(description="posts/s: Kafka + Spark + Elasticsearch vs the embedded pipeline")
    ap.add_argument("--file", type=Path, default=DEFAULT_CORPUS, help="replay corpus (JSONL/CSV with text)")
    ap.add_argument("--runs", default="vader", help=f"comma list of {', '.join(RUNS)} (scorer used by BOTH paths)")
    ap.add_argument("--posts", type=int, default=None, help="posts per run (default: vader 3000, fast 300)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-records", type=int, default=256, help="embedded micro-batch size")
    ap.add_argument("--max-offsets", type=int, default=1000, help="Spark maxOffsetsPerTrigger")
    ap.add_argument("--no-overhead", action="store_true", help="skip the per-batch overhead measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream_distributed.json")
    args = ap.parse_args()
    from tickerpulse.stream import infra
    from tickerpulse.stream.sources.replay import ReplaySource, sample_corpus
    from tickerpulse.stream.spark.job import SparkOptions, spark_session

    if not args.file.is_file():
        print(f"{args.file} not found: using the packaged sample corpus", file=sys.stderr)
        args.file = sample_corpus()
    load0 = os.getloadavg()
    results, overhead = [], None
    with infra.start_noida(tempfile.mkdtemp(prefix="tp-bench-noida-")) as noida:
        t = time.perf_counter()
        spark = spark_session(SparkOptions(shuffle_partitions=2))
        session_s = time.perf_counter() - t
        try:
            for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
                if name not in RUNS:
                    sys.exit(f"unknown run {name!r}: {', '.join(RUNS)}")
                scorer_kind, mode, default_n = RUNS[name]
                posts = list(ReplaySource(args.file, speed=0, limit=args.posts or default_n).iter_posts())
                for path in ("embedded", "distributed"):
                    print(f"[{name}/{path}] {len(posts)} posts from {args.file.name} ...", file=sys.stderr, flush=True)
                    if path == "embedded":
                        r = embedded(posts, scorer_kind, mode, args.model, args.max_records)
                    else:
                        r = distributed(posts, scorer_kind, mode, args.model, args.max_offsets, noida, spark)
                    r.update(run=name, scorer=scorer_kind, mode=mode)
                    results.append(r)
                    print(f"[{name}/{path}] {r['posts_per_s']} posts/s ({r['wall_s']} s, {r['docs']} docs)", file=sys.stderr, flush=True)
            if not args.no_overhead:
                print("[overhead] 1-record micro-batches ...", file=sys.stderr, flush=True)
                overhead = batch_overhead(noida, spark)
        finally:
            spark.stop()
    out = {"benchmark": "stream_distributed", "corpus": str(args.file), "python": platform.python_version(),
           "cpus": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "spark_session_start_s": round(session_s, 1),
           "spark_batch_overhead": overhead, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"{'run':<7} {'path':<52} {'posts':>6} {'docs':>6} {'wall s':>7} {'posts/s':>8} {'batches':>7} {'steady posts/s':>14}")
    for r in results:
        print(f"{r['run']:<7} {r['path']:<52} {r['posts']:>6} {r['docs']:>6} {r['wall_s']:>7} {r['posts_per_s']:>8} "
              f"{r['batches']!s:>7} {r.get('steady_posts_per_s') or '-':>14}")
    print(f"SparkSession start: {out['spark_session_start_s']} s")
    if overhead:
        print(f"Spark per-batch overhead (1-record batches): median {overhead['median_batch_ms']} ms "
              f"(parts {overhead['median_parts_ms']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
