"""The bus interface: Kafka's model, reduced to what the pipeline needs.

- Topics hold partitions; a partition is an append-only log of records with increasing offsets (not
  necessarily contiguous).
- A producer appends; `flush()` returns once everything produced so far is durable.
- A consumer in a consumer group polls records and commits, per (topic, partition), the offset of the
  NEXT record to read (Kafka's convention). A restarted consumer in the same group resumes from the
  committed offsets, so a crash between poll and commit re-delivers (at-least-once); processors make
  writes idempotent to get exactly-once results.
- Records that can never be processed go to the dead-letter topic (`<topic>.dlq` by default) with a reason
  header-equivalent in the value (JSON: reason, code, original offset, payload).

Implementations: `sqlite.SqliteBus` (embedded; one partition per topic), `kafka.KafkaBus` (clusters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DEFAULT_TOPIC = "financial_raw_text"
DEFAULT_GROUP = "tickerpulse-processor"


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic paired with `topic`."""
    return f"{topic}.dlq"


@dataclass(frozen=True)
class Record:
    """One consumed record. `timestamp` is epoch seconds when it was produced (Kafka CreateTime)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


TopicPartition = tuple[str, int]


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after processing `records`: last offset + 1 per (topic, partition)."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group, subscribed to some topics."""

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to `max_records` records after the current position; waits up to `timeout` seconds for the
        first one, returns [] if none came. Advances the in-memory position, not the committed offsets."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Durably commit `offsets` (next offset to read per (topic, partition)); None = everything polled."""
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet committed per (topic, partition) (end offset - committed)."""
        ...

    def close(self) -> None:
        """Leave the group (does not commit)."""
        ...


@runtime_checkable
class Bus(Protocol):
    """A durable log shared by producers and consumer groups."""

    def produce(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        """Append one record (may be buffered until `flush`)."""
        ...

    def flush(self, timeout: float | None = None) -> int:
        """Make every produced record durable; returns how many are still pending (0 on success)."""
        ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """Join consumer group `group` reading `topics` from its committed offsets (earliest if none)."""
        ...

    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        """Create missing topics (no-op for ones that exist)."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next produced record will get (a high watermark)."""
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the committed offset of `group` (absent = nothing committed)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...
