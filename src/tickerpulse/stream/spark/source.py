"""A Kafka source for Spark Structured Streaming on PySpark's Python Data Source API (confluent-kafka).

Spark's own `format("kafka")` needs the spark-sql-kafka connector jar; where it is installed, use it
(`processor_options.source: kafka`). Where it is not (no package ships it, and Maven may be unreachable),
this source reads the same topics with the same option names and the same row schema, so the rest of the
job does not care which one runs:

    spark.dataSource.register(KafkaDataSource)
    spark.readStream.format("tpkafka").option("kafka.bootstrap.servers", "127.0.0.1:9092")
         .option("subscribe", "financial_raw_text").option("startingOffsets", "earliest")
         .option("maxOffsetsPerTrigger", 1000).load()

Offsets are the connector's JSON shape, `{"topic": {"0": next_offset, ...}}`, kept in the checkpoint: a
restarted query re-reads exactly the ranges it had not finished (at-least-once into an idempotent sink).

How the end of a batch is found: the reported high watermark, then a short poll past it (`probeTail`,
default true), because some brokers (Tansu 0.6) under-report the watermark; `probeTail=false` trusts the
watermark (saves ~0.1 s per trigger on brokers that report it right). Partitions are read in parallel, one
Spark task per Kafka partition with records in the range, each polling until it has the whole range.

Pickling: Spark pickles the reader to its Python workers; the confluent Consumer is created lazily in
each process and dropped in `__getstate__`.

Options: `kafka.bootstrap.servers` (required), `subscribe` (one topic or a comma list), `startingOffsets`
(`earliest` | `latest` | connector-style JSON), `maxOffsetsPerTrigger`, `probeTail`, `pollTimeoutMs`
(how long a task waits for missing records before failing, default 60000), and any other `kafka.*`
librdkafka property (passed to the consumers).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

NAME = "tpkafka"
# The spark-sql-kafka connector's row schema (so format("kafka") and this source are interchangeable).
KAFKA_SCHEMA = StructType([
    StructField("key", BinaryType()),
    StructField("value", BinaryType()),
    StructField("topic", StringType()),
    StructField("partition", IntegerType()),
    StructField("offset", LongType()),
    StructField("timestamp", TimestampType()),
    StructField("timestampType", IntegerType()),
])
Offsets = dict[str, dict[str, int]]  # topic -> partition (as str: JSON keys) -> next offset

log = logging.getLogger("tickerpulse.stream.spark.source")


class KafkaRange(InputPartition):
    """One Spark task: records [start, end) of one Kafka partition."""

    def __init__(self, topic: str, partition: int, start: int, end: int):
        super().__init__((topic, partition, start, end))
        self.topic, self.partition, self.start, self.end = topic, partition, start, end


class KafkaDataSource(DataSource):
    """`format("tpkafka")`: the Kafka topics of option `subscribe` as a stream of connector-shaped rows."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> StructType:
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        return KafkaStreamReader(dict(self.options))


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans offset ranges on the driver and reads them on executors (see the module docstring)."""

    def __init__(self, options: dict[str, str]):
        # Spark hands options over case-insensitively (keys may arrive lower-cased): normalize.
        opts = {str(k).lower(): v for k, v in options.items()}
        if not opts.get("kafka.bootstrap.servers"):
            raise ValueError("tpkafka source: option kafka.bootstrap.servers is required")
        if not opts.get("subscribe"):
            raise ValueError("tpkafka source: option subscribe (topic names) is required")
        self.bootstrap = opts["kafka.bootstrap.servers"]
        self.topics = [t.strip() for t in opts["subscribe"].split(",") if t.strip()]
        self.starting = opts.get("startingoffsets", "earliest")
        self.max_offsets = int(opts.get("maxoffsetspertrigger") or 0) or None
        self.probe = str(opts.get("probetail", "true")).lower() != "false"
        self.poll_timeout_s = int(opts.get("polltimeoutms", 60_000)) / 1000
        self.extra = {k[len("kafka."):]: v for k, v in opts.items() if k.startswith("kafka.") and k != "kafka.bootstrap.servers"}
        self._target: Offsets | None = None
        self._consumer: Any = None

    # -- pickling: never ship a live consumer -------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_consumer"] = None
        return state

    def _ck(self) -> Any:
        import confluent_kafka

        return confluent_kafka

    def _new_consumer(self, **conf: Any) -> Any:
        base = {"bootstrap.servers": self.bootstrap, "group.id": "tickerpulse-spark-reader",
                "enable.auto.commit": False, "enable.partition.eof": False, "fetch.wait.max.ms": 20,
                "logger": logging.getLogger("tickerpulse.stream.kafka.rdkafka")}
        return self._ck().Consumer({**base, **self.extra, **conf})

    def _driver_consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self._new_consumer()
        return self._consumer

    # -- planning (driver) ---------------------------------------------------------------------------
    def _partitions(self, topic: str) -> list[int]:
        md = self._driver_consumer().list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise RuntimeError(f"tpkafka source: topic {topic!r} does not exist on {self.bootstrap}")
        return sorted(md.partitions)

    def _watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        c, TP = self._driver_consumer(), self._ck().TopicPartition
        return {p: c.get_watermark_offsets(TP(topic, p), timeout=10, cached=False) for p in self._partitions(topic)}

    def _ends(self) -> Offsets:
        """True end offsets now (watermark, then a probe past it)."""
        from tickerpulse.stream.bus.kafka import probe_end

        out: Offsets = {}
        for topic in self.topics:
            hw = {p: hi for p, (_, hi) in self._watermarks(topic).items()}
            ends = probe_end(self._driver_consumer(), topic, hw, idle_s=0.1) if self.probe else hw
            out[topic] = {str(p): int(o) for p, o in ends.items()}
        return out

    def initialOffset(self) -> Offsets:
        if self.starting == "earliest":
            return {t: {str(p): int(lo) for p, (lo, _) in self._watermarks(t).items()} for t in self.topics}
        if self.starting == "latest":
            return self._ends()
        try:
            given = json.loads(self.starting)
        except json.JSONDecodeError:
            raise ValueError(f"tpkafka source: startingOffsets must be earliest, latest or JSON, got {self.starting!r}") from None
        out: Offsets = {}
        for t in self.topics:
            marks = self._watermarks(t)
            spec = given.get(t, {})
            # connector convention: -2 = earliest, -1 = latest
            out[t] = {str(p): int(marks[p][0] if int(spec.get(str(p), -2)) == -2 else
                                  marks[p][1] if int(spec.get(str(p), -2)) == -1 else spec[str(p)]) for p in marks}
        return out

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        """availableNow: freeze the target at what exists now; later records wait for the next run."""
        self._target = self._ends()

    def latestOffset(self, start: Offsets | None = None, limit: ReadLimit | None = None) -> Offsets:
        ends = self._target if self._target is not None else self._ends()
        start = start or {}
        for topic, parts in ends.items():  # partitions added since `start`: read them from the beginning
            low = {str(p): int(lo) for p, (lo, _) in self._watermarks(topic).items()} if set(parts) - set(start.get(topic, {})) else {}
            start.setdefault(topic, {})
            for p in parts:
                start[topic].setdefault(p, low.get(p, 0))
        if isinstance(limit, ReadMaxRows):
            return cap_offsets(start, ends, int(limit.max_rows))
        return {t: {p: max(int(o), int(start[t].get(p, 0))) for p, o in parts.items()} for t, parts in ends.items()}

    def reportLatestOffset(self) -> Offsets | None:
        return self._target

    def partitions(self, start: Offsets, end: Offsets) -> list[KafkaRange]:
        out = []
        for topic, parts in end.items():
            for p, e in sorted(parts.items(), key=lambda kv: int(kv[0])):
                s = int(start.get(topic, {}).get(p, 0))
                if int(e) > s:
                    out.append(KafkaRange(topic, int(p), s, int(e)))
        return out

    def commit(self, end: Offsets) -> None:
        """Nothing to do: progress lives in the checkpoint (the processor mirrors it to the consumer group)."""

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- reading (executors) -------------------------------------------------------------------------
    def read(self, partition: KafkaRange):  # -> Iterator[tuple]
        """Yield the records [start, end) of one Kafka partition (offsets may have gaps: transaction
        markers, compaction). Raises if the range cannot be completed within `pollTimeoutMs`."""
        ck = self._ck()
        c = self._new_consumer(**{"fetch.wait.max.ms": 50})
        try:
            tp = ck.TopicPartition(partition.topic, partition.partition, partition.start)
            c.assign([tp])
            last_progress = time.monotonic()
            while True:
                msgs = c.consume(1000, 0.5)
                for m in msgs:
                    if m.error() is not None:
                        if m.error().fatal():
                            raise RuntimeError(f"tpkafka source: {m.error().str()}")
                        continue
                    off = m.offset()
                    if off >= partition.end:
                        return
                    _, ts_ms = m.timestamp()
                    ts = datetime.fromtimestamp((ts_ms if ts_ms and ts_ms > 0 else time.time() * 1000) / 1000, timezone.utc)
                    yield (m.key(), m.value(), m.topic(), m.partition(), off, ts, m.timestamp()[0])
                    if off >= partition.end - 1:
                        return
                if msgs:
                    last_progress = time.monotonic()
                    continue
                pos = c.position([ck.TopicPartition(partition.topic, partition.partition)])[0].offset
                if pos >= partition.end:
                    return
                if time.monotonic() - last_progress > self.poll_timeout_s:
                    raise RuntimeError(
                        f"tpkafka source: {partition.topic}[{partition.partition}] stuck at offset {pos} < {partition.end} "
                        f"for {self.poll_timeout_s:.0f}s (records deleted by retention, or the broker lost them)")
        finally:
            c.close()


def cap_offsets(start: Offsets, ends: Offsets, max_rows: int) -> Offsets:
    """End offsets admitting at most `max_rows` records in total, shared across partitions in proportion
    to what each has available (leftovers from rounding go one by one to the fullest partitions)."""
    max_rows = max(1, int(max_rows))
    first = {(t, p): int(start.get(t, {}).get(p, 0)) for t, parts in ends.items() for p in parts}
    avail = {(t, p): max(0, int(e) - first[(t, p)]) for t, parts in ends.items() for p, e in parts.items()}
    total = sum(avail.values())
    if total <= max_rows:
        alloc = avail
    else:
        alloc = {k: a * max_rows // total for k, a in avail.items()}
        left = max_rows - sum(alloc.values())  # < number of partitions
        for k in sorted(avail, key=lambda k: -avail[k]):
            if left <= 0:
                break
            if alloc[k] < avail[k]:
                alloc[k] += 1
                left -= 1
    return {t: {p: first[(t, p)] + alloc[(t, p)] for p in parts} for t, parts in ends.items()}
