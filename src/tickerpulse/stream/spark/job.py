"""The Spark Structured Streaming job: Kafka -> parse/tickers -> model (pandas UDF) -> foreachBatch -> store.

    setup:  `spark_session(opts)` (local[2] by default; PYSPARK_PYTHON = this interpreter)
    plan:   `build_stream(spark, cfg, opts)` -> the scored streaming DataFrame
    run:    `start_query(...)` -> foreachBatch writes every partition to the store (one bulk per partition)
    watch:  `run_processor(cfg, stop, until_idle)` -> heartbeats, consumer-group offsets, stop, errors

Guarantees: the source's offsets live in `checkpointLocation`; Spark marks a batch done only after
foreachBatch returned, so a killed job re-runs its unfinished batch on restart, and the store's
deterministic ids turn that re-run into overwrites: no loss, no duplicates. Backpressure:
`maxOffsetsPerTrigger` (= `max_records` unless `processor_options.max_offsets_per_trigger`). After each
batch the driver commits the batch's end offsets to the consumer group `cfg.group` (monitoring: `stream
status` lag, `stream run --exit-when-done`); Spark itself never reads them back.

A failing foreachBatch does not raise in the driver by itself: `run_processor` checks
`query.exception()` and raises `SparkJobError` with Spark's message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from tickerpulse._optional import require
from tickerpulse.config import ConfigError, StrictModel
from tickerpulse.stream.config import StreamConfig

log = logging.getLogger("tickerpulse.stream.spark")


class SparkJobError(RuntimeError):
    """The streaming query failed (the message carries Spark's error)."""


class SparkOptions(StrictModel):
    """`processor_options` of `--processor spark` (YAML `processor_options:` or `--set processor_options.x=`)."""

    master: str = Field("local[2]", description="Spark master URL.")
    source: Literal["python", "kafka"] = Field(
        "python", description="python = the project's Kafka reader (Python Data Source API); kafka = Spark's "
                              "format('kafka') (needs the spark-sql-kafka connector, e.g. via conf spark.jars.packages).")
    checkpoint: Path | None = Field(None, description="checkpointLocation [<dir>/spark-checkpoint/<group>].")
    available_now: bool = Field(False, description="Process what is on the topic now, then stop (trigger availableNow).")
    trigger_interval: str = Field("1 second", description="Processing-time trigger of a continuous run.")
    starting_offsets: str = Field("earliest", description="earliest | latest | connector JSON (first run only).")
    max_offsets_per_trigger: int | None = Field(None, ge=1, description="Records per micro-batch [max_records].")
    probe_tail: bool = Field(True, description="python source: poll past the high watermark (needed for Tansu).")
    shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions.")
    driver_memory: str = Field("1g", description="spark.driver.memory (local mode: the whole job).")
    log_level: str = Field("WARN", description="Spark's log level.")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, applied last.")
    max_pause_s: float = Field(60.0, gt=0, description="Seconds a task pauses on an unavailable scorer before "
                                                       "failing its micro-batch (retried from the checkpoint).")


def spark_options(cfg: StreamConfig) -> SparkOptions:
    try:
        return SparkOptions.model_validate(cfg.processor_options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"processor_options.{key}: {first['msg']} (--processor spark)") from None


def spark_session(opts: SparkOptions, app_name: str = "tickerpulse-stream") -> Any:
    """Get or create the SparkSession. Workers run this interpreter (PYSPARK_PYTHON), so they import the
    same tickerpulse and packages as the driver."""
    require("pyspark", "the Spark processor")
    require("pyarrow", "the Spark processor's pandas UDFs")
    from pyspark.sql import SparkSession

    quiet = logging.getLogger("py4j")  # one INFO line per callback otherwise
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    b = (SparkSession.builder.master(opts.master).appName(app_name)
         .config("spark.driver.memory", opts.driver_memory)
         .config("spark.sql.shuffle.partitions", str(opts.shuffle_partitions))
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.python.worker.reuse", "true")
         # pandas sees Spark timestamps as naive wall-clock times in the session zone: make that zone UTC
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.streaming.stopTimeout", "30000"))
    for k, v in opts.conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(opts.log_level)
    return spark


def build_stream(spark: Any, cfg: StreamConfig, opts: SparkOptions) -> Any:
    """The scored streaming DataFrame: PARSED_DDL columns + `answer` (ANSWER_DDL struct, null unless item)."""
    from pyspark.sql.functions import pandas_udf

    from tickerpulse.stream.spark.pipeline import ANSWER_DDL, PARSED_DDL, parse_posts, score_series
    from tickerpulse.stream.spark.source import NAME, KafkaDataSource

    max_offsets = opts.max_offsets_per_trigger or cfg.max_records
    if opts.source == "python":
        spark.dataSource.register(KafkaDataSource)
        reader = spark.readStream.format(NAME).option("probeTail", str(opts.probe_tail).lower())
    else:
        reader = spark.readStream.format("kafka").option("failOnDataLoss", "false")
    reader = (reader.option("kafka.bootstrap.servers", cfg.kafka_bootstrap).option("subscribe", cfg.topic)
              .option("startingOffsets", opts.starting_offsets).option("maxOffsetsPerTrigger", str(max_offsets)))
    try:
        raw = reader.load()
    except Exception as exc:  # pyspark's AnalysisException: the connector jar is not on the classpath
        if opts.source == "kafka" and "kafka" in str(exc).lower() and "find" in str(exc).lower():
            raise ConfigError("processor_options.source=kafka needs Spark's spark-sql-kafka connector (e.g. "
                              "processor_options.conf: {spark.jars.packages: org.apache.spark:spark-sql-kafka-0-10_2.13:"
                              "<Spark version>}); or use source: python") from None
        raise
    conf = cfg.model_dump(mode="json")

    @pandas_udf(ANSWER_DDL)  # type: ignore[call-overload]
    def score(text, ticker):  # noqa: ANN001 - pandas Series in, DataFrame (struct) out
        return score_series(conf, text, ticker)

    parsed = raw.select("value", "topic", "partition", "offset", "timestamp").mapInPandas(parse_posts(conf), PARSED_DDL)
    return parsed.withColumn("answer", score("text", "ticker"))


class BatchTracker:
    """foreachBatch body + the driver's view of progress: writes each batch through the executors, sums
    their stats, heartbeats to the store."""

    def __init__(self, cfg: StreamConfig, store: Any, meta: dict[str, Any]):
        from tickerpulse.stream.spark.pipeline import model_version, write_partition

        self.cfg, self.store, self.meta = cfg, store, meta
        self.version = meta.get("model_version") or model_version(cfg)
        self.writer = write_partition(cfg.model_dump(mode="json"), self.version)
        self.totals = {"records": 0, "posts": 0, "docs": 0, "dead_letters": 0, "batches": 0}
        self.batch_ms: list[float] = []
        self.last_data = time.monotonic()
        self.started = time.time()
        self.lock = threading.Lock()
        self.last: dict[str, Any] = {}
        self.startup_s: float | None = None

    def __call__(self, df: Any, batch_id: int) -> None:
        t0 = time.perf_counter()
        parts = df.rdd.mapPartitions(self.writer).collect()
        ms = (time.perf_counter() - t0) * 1000
        from tickerpulse.stream.store.base import percentiles

        with self.lock:
            for k in ("records", "posts", "docs", "dead_letters"):
                self.totals[k] += sum(p[k] for p in parts)
            self.totals["batches"] += 1
            self.batch_ms.append(ms)
            if parts:
                self.last_data = time.monotonic()
            span = max(1.0, time.time() - self.started)
            calls = [x for p in parts for x in p["model_call_ms"]]
            self.last = {"batch_id": batch_id, "batch_ms": round(ms, 1), "posts_per_s": round(self.totals["posts"] / span, 3),
                         "lag_ms": percentiles([x for p in parts for x in p["lags_ms"]], (50, 95)),
                         "model_call_ms": percentiles(calls, (50, 95)),
                         "batch_write_ms": round(max((p["write_ms"] for p in parts), default=0.0), 1),
                         "partitions": len(parts), **self.totals}
        self.store.heartbeat("processor", {**self.meta, "status": "running", **self.last})


def start_query(cfg: StreamConfig, opts: SparkOptions, tracker: BatchTracker, spark: Any) -> Any:
    """Start the streaming query writing through `tracker` (foreachBatch)."""
    checkpoint = opts.checkpoint or Path(cfg.dir) / "spark-checkpoint" / cfg.group
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    w = (build_stream(spark, cfg, opts).writeStream.queryName(f"tickerpulse_{cfg.group}".replace("-", "_"))
         .option("checkpointLocation", str(checkpoint)).foreachBatch(tracker))
    w = w.trigger(availableNow=True) if opts.available_now else w.trigger(processingTime=opts.trigger_interval)
    return w.start()


def _end_offsets(progress: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Per topic and partition, the end offset of the last finished batch (from `query.lastProgress`)."""
    out: dict[str, dict[str, int]] = {}
    for src in (progress or {}).get("sources", []):
        end = src.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except json.JSONDecodeError:
                continue
        for topic, parts in (end or {}).items():
            if isinstance(parts, dict):
                out.setdefault(topic, {}).update({str(p): int(o) for p, o in parts.items()})
    return out


def mirror_offsets(bus: Any, group: str, ends: dict[str, dict[str, int]], done: dict[tuple[str, int], int]) -> None:
    """Commit `ends` to consumer group `group` (only what moved since `done`, which is updated)."""
    todo = {(t, int(p)): o for t, parts in ends.items() for p, o in parts.items() if done.get((t, int(p))) != o}
    if not todo:
        return
    ck = require("confluent_kafka")
    c = ck.Consumer({"bootstrap.servers": bus.bootstrap, "group.id": group, "enable.auto.commit": False,
                     "logger": logging.getLogger("tickerpulse.stream.kafka.rdkafka")})
    try:
        c.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in todo.items()], asynchronous=False)
        done.update(todo)
    except ck.KafkaException as exc:  # monitoring only: never fail the job for it
        log.warning("could not mirror offsets to group %s: %s", group, exc)
    finally:
        c.close()


def _idle(query: Any, tracker: BatchTracker, idle_s: float) -> bool:
    """No data for `idle_s` seconds, counted from the first finished trigger (JVM and query start-up take
    longer than a typical idle timeout), and nothing being processed or waiting right now."""
    if query.lastProgress is None:
        tracker.last_data = max(tracker.last_data, time.monotonic())
        return False
    status = query.status
    return (time.monotonic() - tracker.last_data >= idle_s and not status.get("isTriggerActive")
            and not status.get("isDataAvailable"))


def _graceful_stop(query: Any, wait_s: float = 20.0) -> None:
    """Let a running batch finish (its write and commit), then stop the query."""
    deadline = time.monotonic() + wait_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    query.stop()


def _root_cause(msg: str) -> str:
    """The last `pkg.Error: message` line of a Python traceback inside Spark's message (the worker's
    exception, e.g. `tickerpulse.stream.scoring.ScorerUnavailable: ... 503`), which Spark buries under
    its own frames."""
    import re

    found = [m.group(0) for m in re.finditer(r"(?m)^(?:(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*|\w*(?:Error|Exception)): .+$", msg)]
    return found[-1][:500] if found else ""


def run_processor(cfg: StreamConfig, stop: threading.Event | None = None, until_idle: float | None = None,
                  spark: Any = None) -> dict[str, Any]:
    """Registry hook of `--processor spark`: run the query until `stop` is set, until `until_idle` seconds
    pass without data, or (`processor_options.available_now`) until the topic's current end is processed.

    Returns: totals {records, posts, docs, dead_letters, batches}, `batch_ms` (wall time per batch) and
        `startup_s` (query start to its first trigger).
    Raises:
        ConfigError: the bus is not Kafka, or a bad processor option.
        SparkJobError: the query failed (e.g. the store rejected writes after retries).
    """
    from tickerpulse.stream import registry

    if cfg.bus != "kafka":
        raise ConfigError(f"--processor spark reads Kafka: use --bus kafka (got --bus {cfg.bus})")
    opts = spark_options(cfg)
    stop = stop or threading.Event()
    bus = registry.open_bus(cfg)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    store = registry.open_store(cfg)  # creates templates/indices before the executors write
    spark = spark or spark_session(opts)
    from tickerpulse.stream.spark.pipeline import model_version

    meta = {"pid": os.getpid(), "processor": "spark", "master": opts.master, "source": opts.source, "scorer": cfg.scorer,
            "model_version": model_version(cfg, stop), "bus": cfg.bus, "store": cfg.store,
            "topic": cfg.topic, "group": cfg.group}
    tracker = BatchTracker(cfg, store, meta)
    store.heartbeat("processor", {**meta, "status": "starting"})
    log.info("spark processor: %s -> %s via %s (%s), checkpoint under %s", cfg.topic, cfg.store, opts.master,
             opts.source, opts.checkpoint or Path(cfg.dir) / "spark-checkpoint")
    started = time.time()
    query = start_query(cfg, opts, tracker, spark)
    committed: dict[tuple[str, int], int] = {}
    last_batch = -1
    try:
        while query.isActive:
            if stop.is_set():
                _graceful_stop(query)
                break
            if until_idle is not None and not opts.available_now and _idle(query, tracker, until_idle):
                _graceful_stop(query)
                break
            try:
                query.awaitTermination(0.5)
            except Exception:  # a failed query raises here; reported below as SparkJobError
                if query.isActive:
                    raise
                break
            progress = query.lastProgress
            if progress and progress.get("batchId", -1) != last_batch:
                last_batch = progress["batchId"]
                mirror_offsets(bus, cfg.group, _end_offsets(progress), committed)
        mirror_offsets(bus, cfg.group, _end_offsets(query.lastProgress), committed)
        first = next(iter(query.recentProgress), None)
        if first:  # trigger start times are ISO-8601 UTC ("...Z"): from `start()` to the first trigger
            from tickerpulse.stream.schema import to_utc

            tracker.startup_s = round(to_utc(first["timestamp"]).timestamp() - started, 2)
        exc = query.exception()
        if exc is not None:
            msg = str(getattr(exc, "desc", None) or exc)
            raise SparkJobError(f"streaming query failed: {_root_cause(msg)}\n{msg[:2000]}")
        store.heartbeat("processor", {**meta, "status": "stopped", **tracker.last, **tracker.totals})
    finally:
        if query.isActive:
            query.stop()
        store.close()
        bus.close()
    return {**tracker.totals, "batch_ms": [round(x, 1) for x in tracker.batch_ms], "startup_s": tracker.startup_s}
