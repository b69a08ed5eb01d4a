"""The Kafka bus (confluent-kafka / librdkafka): the `Bus` protocol on any Kafka-protocol broker.

- Producer: idempotent (`enable.idempotence`, `acks=all`), so a retried send never duplicates a record;
  delivery failures are collected and raised by `flush()` (a producer never loses records silently).
- Consumers: a real consumer group (`subscribe`), auto-commit OFF: the processor commits explicitly after
  its store write, so a crash re-delivers instead of losing. `session.timeout.ms` defaults to 6000 so a
  restarted member joins in seconds (Tansu takes ~23 s with librdkafka's default of 45000).
- Topics: created with the AdminClient (`partitions`, replication factor 1 by default).
- Dead letters: the processor produces them to `<topic>.dlq` like any record.

Broker quirks handled here (see docs/stream-distributed.md): Tansu 0.6 reports a wrong high watermark
(the base offset of the last batch + 1), so nothing here reads "up to the high watermark": consumers poll,
and `end_offsets()` starts at the reported watermark and polls past it to find the true end
(`exact=False` skips that probe and returns the raw watermark).

- `max.poll.interval.ms` comes from the processor's batch time budget (`max_batch_s` + 60 s): a member
  that does not poll for that long is thrown out of the group and its batch re-delivered elsewhere, so it
  must exceed the slowest batch (model calls, retries, pauses), not librdkafka's 5-minute default.

`bus_options` keys (YAML `bus_options:` or `--set bus_options.partitions=6`): `partitions` (default 3),
`replication_factor` (1), `session_timeout_ms` (6000), `max_poll_interval_ms` (from `max_batch_s`),
`producer` / `consumer` / `admin` (dicts of raw librdkafka properties, applied last).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tickerpulse._optional import require
from tickerpulse.config import ConfigError
from tickerpulse.stream.bus.base import Record, TopicPartition

log = logging.getLogger("tickerpulse.stream.kafka")
_OPTION_KEYS = {"partitions", "replication_factor", "session_timeout_ms", "max_poll_interval_ms", "producer",
                "consumer", "admin"}


class KafkaBusError(RuntimeError):
    """A Kafka operation failed for good (delivery failed after librdkafka's retries, topic creation)."""


def _ck() -> Any:
    return require("confluent_kafka", "the Kafka bus")


def _common(bootstrap: str) -> dict[str, Any]:
    # librdkafka logs to stderr by default; route it to Python logging so tests and the CLI stay readable.
    return {"bootstrap.servers": bootstrap, "logger": logging.getLogger("tickerpulse.stream.kafka.rdkafka"),
            "error_cb": _log_error}


def _log_error(err: Any) -> None:
    log.warning("kafka: %s", err)


class KafkaBus:
    """`Bus` over a Kafka cluster.

    Args:
        bootstrap: "host:port[,host:port]".
        partitions: partitions of topics this bus creates when the caller does not say.
        replication_factor: of created topics.
        session_timeout_ms: consumer-group session timeout (how fast a dead member is replaced).
        max_poll_interval_ms: longest gap between polls before the group drops a member (>= the session
            timeout, as librdkafka requires).
        producer, consumer, admin: extra librdkafka properties (override ours).
    """

    def __init__(self, bootstrap: str, *, partitions: int = 3, replication_factor: int = 1,
                 session_timeout_ms: int = 6000, max_poll_interval_ms: int = 300_000,
                 producer: Mapping[str, Any] | None = None,
                 consumer: Mapping[str, Any] | None = None, admin: Mapping[str, Any] | None = None):
        ck = _ck()
        self.bootstrap = bootstrap
        self.partitions, self.replication_factor = int(partitions), int(replication_factor)
        self.session_timeout_ms = int(session_timeout_ms)
        self.max_poll_interval_ms = max(int(max_poll_interval_ms), self.session_timeout_ms)
        self._consumer_extra = dict(consumer or {})
        self._admin = require("confluent_kafka.admin").AdminClient({**_common(bootstrap), **(admin or {})})
        self._producer_conf = {**_common(bootstrap), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                               **(producer or {})}
        self._producer: Any = None
        self._lock = threading.Lock()
        self._failures: list[str] = []
        self._ck = ck

    # -- producing ---------------------------------------------------------------------------------
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        """Queue one record (sent in the background; `flush` waits for it). Blocks while the local queue
        is full instead of failing."""
        with self._lock:
            if self._producer is None:
                self._producer = self._ck.Producer(self._producer_conf)
            producer = self._producer
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # queue full: serve delivery reports until there is room
        producer.poll(0)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued record is acknowledged; returns how many are still pending.

        Raises:
            KafkaBusError: some records failed delivery for good (names the first few).
        """
        pending = 0
        if self._producer is not None:
            pending = self._producer.flush(-1 if timeout is None else timeout)
        if self._failures:
            failures, self._failures = self._failures, []
            raise KafkaBusError(f"{len(failures)} record(s) failed delivery: {'; '.join(failures[:3])}")
        return pending

    # -- admin -------------------------------------------------------------------------------------
    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create the missing topics (`partitions` defaults to the bus's `partitions` option).

        Raises:
            KafkaBusError: creation failed for a reason other than "already exists".
        """
        NewTopic = require("confluent_kafka.admin").NewTopic
        existing = set(self._admin.list_topics(timeout=10).topics)
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return
        n = int(partitions or self.partitions)
        futures = self._admin.create_topics(
            [NewTopic(t, num_partitions=n, replication_factor=self.replication_factor) for t in missing],
            operation_timeout=10, request_timeout=15)
        for topic, fut in futures.items():
            try:
                fut.result()
            except self._ck.KafkaException as exc:
                if exc.args[0].code() != self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaBusError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from None
        self._wait_metadata(missing)

    def _wait_metadata(self, topics: Sequence[str], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = self._admin.list_topics(timeout=5).topics
            if all(t in md and md[t].partitions and md[t].error is None for t in topics):
                return
            time.sleep(0.1)
        raise KafkaBusError(f"topics {list(topics)} not visible in metadata after {timeout:.0f}s")

    def partitions_of(self, topic: str) -> list[int]:
        """Partition ids of `topic` ([] if it does not exist)."""
        md = self._admin.list_topics(topic, timeout=10).topics.get(topic)
        return sorted(md.partitions) if md is not None and md.error is None else []

    def _plain_consumer(self, group: str | None = None, **extra: Any) -> Any:
        conf = {**_common(self.bootstrap), "group.id": group or "tickerpulse-admin", "enable.auto.commit": False,
                "enable.partition.eof": False, "fetch.wait.max.ms": 50, **extra}
        return self._ck.Consumer(conf)

    def end_offsets(self, topic: str, exact: bool = True) -> dict[int, int]:
        """Per partition, the offset the next record will get. With `exact`, polls past the reported high
        watermark (brokers like Tansu under-report it); costs one short poll."""
        parts = self.partitions_of(topic)
        if not parts:
            return {}
        c = self._plain_consumer()
        try:
            TP = self._ck.TopicPartition
            hw = {p: c.get_watermark_offsets(TP(topic, p), timeout=10, cached=False)[1] for p in parts}
            return probe_end(c, topic, hw) if exact else hw
        finally:
            c.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the committed offset of `group` (partitions without a commit are absent)."""
        parts = self.partitions_of(topic)
        if not parts:
            return {}
        c = self._plain_consumer(group)
        try:
            got = c.committed([self._ck.TopicPartition(topic, p) for p in parts], timeout=10)
        finally:
            c.close()
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self, group, list(topics))

    def close(self) -> None:
        if self._producer is not None:
            self.flush(30)
            self._producer = None

    def __enter__(self) -> KafkaBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_end(consumer: Any, topic: str, start: Mapping[int, int], idle_s: float = 0.3,
              max_s: float = 10.0) -> dict[int, int]:
    """True end offsets: assign each partition at `start` (e.g. a reported watermark) and poll until a
    poll returns nothing; end = max(start, last offset seen + 1). Bounded by `max_s` on a busy topic."""
    ck = _ck()
    end = dict(start)
    consumer.assign([ck.TopicPartition(topic, p, o) for p, o in start.items()])
    deadline = time.monotonic() + max_s
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, idle_s)
            if not msgs:
                break
            for m in msgs:
                if m.error() is None:
                    end[m.partition()] = max(end[m.partition()], m.offset() + 1)
    finally:
        consumer.unassign()
    return end


class KafkaConsumer:
    """One member of a consumer group; see `bus.base.Consumer`. Not thread-safe (librdkafka consumers
    must be used from one thread)."""

    def __init__(self, bus: KafkaBus, group: str, topics: list[str]):
        self.bus, self.group, self.topics = bus, group, topics
        ck = bus._ck
        conf = {**_common(bus.bootstrap), "group.id": group, "enable.auto.commit": False,
                "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                "enable.partition.eof": False, "session.timeout.ms": bus.session_timeout_ms,
                "heartbeat.interval.ms": max(100, bus.session_timeout_ms // 6), "fetch.wait.max.ms": 100,
                "max.poll.interval.ms": bus.max_poll_interval_ms,
                **bus._consumer_extra}
        self._c = ck.Consumer(conf)
        self._c.subscribe(topics)
        self._pos: dict[TopicPartition, int] = {}
        self._tp = ck.TopicPartition

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to `max_records` records; waits up to `timeout` s for the first. Transport errors are logged
        and retried by librdkafka; a fatal one raises KafkaBusError."""
        out: list[Record] = []
        for m in self._c.consume(max(1, int(max_records)), max(0.0, timeout)):
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaBusError(f"consumer {self.group}: {err.str()}")
                log.warning("consumer %s: %s", self.group, err.str())
                continue
            _, ts_ms = m.timestamp()
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                              ts_ms / 1000.0 if ts_ms and ts_ms > 0 else time.time()))
            self._pos[(m.topic(), m.partition())] = m.offset() + 1
        return out

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Synchronously commit next-offsets per (topic, partition) (None = everything polled so far)."""
        offsets = dict(self._pos if offsets is None else offsets)
        if not offsets:
            return
        self._c.commit(offsets=[self._tp(t, p, int(o)) for (t, p), o in offsets.items()], asynchronous=False)

    def lag(self) -> dict[TopicPartition, int]:
        """Uncommitted records per assigned partition. The end is max(reported watermark, our position),
        so a broker that under-reports its watermark (Tansu) cannot produce a negative lag."""
        out: dict[TopicPartition, int] = {}
        assigned = self._c.assignment()
        if not assigned:
            return out
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._c.committed(assigned, timeout=10)}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            lo, hi = self._c.get_watermark_offsets(tp, timeout=10, cached=False)
            end = max(hi, self._pos.get(key, 0))
            start = committed.get(key, -1)
            out[key] = max(0, end - (start if start >= 0 else lo))
        return out

    def close(self) -> None:
        self._c.close()


def open_bus(cfg: Any) -> KafkaBus:
    """Registry hook: a `KafkaBus` for a `StreamConfig` (`kafka_bootstrap`, `bus_options`)."""
    opts = dict(getattr(cfg, "bus_options", None) or {})
    unknown = set(opts) - _OPTION_KEYS
    if unknown:
        raise ConfigError(f"unknown bus_options for --bus kafka: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_OPTION_KEYS))})")
    budget_s = getattr(cfg, "max_batch_s", None)
    if budget_s is not None:
        opts.setdefault("max_poll_interval_ms", max_poll_interval_ms(budget_s))
    return KafkaBus(cfg.kafka_bootstrap, **opts)


def max_poll_interval_ms(batch_budget_s: float, margin_s: float = 60.0) -> int:
    """`max.poll.interval.ms` for a processor whose batches take up to `batch_budget_s` (librdkafka caps
    the property at 86,400,000)."""
    return min(86_400_000, int((batch_budget_s + margin_s) * 1000))
