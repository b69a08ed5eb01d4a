"""Dead letters on the bus: list the pending ones, and redrive them (put each original record back on the
posts topic, so the processor tries it again after a fix).

The processor writes every record it gives up on twice: a row in the store's `dead_letters` table (the
history the dashboard shows) and one JSON `DeadLetter` on the dead-letter topic `<topic>.dlq` (the queue
this module works on). A letter keeps the record whole, byte for byte, up to the post size limit.

Redrive reads the dead-letter topic as consumer group `<group>.redrive`, re-produces each letter's exact
original bytes to the posts topic, flushes, and only then commits the group's offsets. So:
  - a redriven letter is never redriven again (it is behind the committed offset); `list` shows only
    letters after it;
  - a crash between the produce and the commit redrives that batch again on the next run, and the
    processor's deterministic document ids turn the second copy into the same stored result: a redriven
    good post ends up in the store exactly once;
  - a letter that fails again comes back as a new letter (new bus position), to be looked at again.
It goes through the `Bus` protocol only, so the embedded SQLite bus and Kafka behave the same.

Not redriven (reported, and passed so they do not block the queue): letters whose payload was cut (a
record over the post size limit: the original bytes are gone) and dead-letter records that are not a
`DeadLetter` at all. The same payload twice in one run (a post whose two tickers both failed) is
produced once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tickerpulse.stream.bus.base import Bus, Record, next_offsets
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.schema import DeadLetter

log = logging.getLogger("tickerpulse.stream.dlq")


def redrive_group(group: str) -> str:
    """The consumer group whose committed offsets mark dead letters as redriven."""
    return f"{group}.redrive"


@dataclass
class Letter:
    """One record of the dead-letter topic: its bus position and the letter (None if unreadable)."""

    record: Record
    letter: DeadLetter | None
    problem: str = ""  # why it cannot be redriven ("" = it can)

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        d: dict[str, Any] = {"dlq_partition": r.partition, "dlq_offset": r.offset, "redrivable": not self.problem,
                             "problem": self.problem}
        if self.letter is not None:
            d.update(self.letter.to_dict(payload_chars=200))  # a listing, not a dump: payloads reach 128 KB
        return d


def read_letter(record: Record) -> Letter:
    """Decode one dead-letter record; never raises."""
    try:
        letter = DeadLetter.model_validate(json.loads(record.value or b""))
    except (ValueError, ValidationError, RecursionError) as exc:
        return Letter(record, None, f"not a dead letter ({type(exc).__name__})")
    try:
        truncated = letter.truncated
    except ValueError:  # base64 that does not decode
        return Letter(record, letter, "payload unreadable")
    if truncated:
        return Letter(record, letter, f"payload cut at {len(letter.raw_payload())} of {letter.payload_bytes} bytes")
    return Letter(record, letter)


@contextlib.contextmanager
def _pending(bus: Bus, group: str, topic: str, batch: int, limit: int | None, timeout_s: float,
             idle_s: float) -> Iterator[tuple[Callable[[list[Letter]], None], Iterator[list[Letter]]]]:
    """(mark, batches): batches of letters after `group`'s committed position, until the topic's end (or
    `limit` letters, or `idle_s` without a record once some came, or `timeout_s` in all: a Kafka group join
    takes seconds); `mark(batch)` commits the group past a batch. When nothing is pending no group is
    joined just to leave it (Tansu leaves a group stuck after a member that subscribed and closed without
    polling)."""
    ends = {p: e for p, e in bus.end_offsets(topic).items() if e > 0}
    done = bus.committed(group, topic)
    left = {p for p, e in ends.items() if done.get(p, 0) < e}
    if not left:
        yield (lambda _: None), iter(())
        return
    consumer = bus.consumer(group, [topic])

    def batches() -> Iterator[list[Letter]]:
        seen = 0
        deadline = time.monotonic() + timeout_s
        last = None
        while left and (limit is None or seen < limit):
            now = time.monotonic()
            if now > deadline or (last is not None and now - last > idle_s):
                log.warning("stopped reading %s with partitions %s not at their end", topic, sorted(left))
                return
            room = batch if limit is None else min(batch, limit - seen)
            records = consumer.poll(room, 0.5)
            if not records:
                continue
            last = time.monotonic()
            for r in records:
                if r.offset + 1 >= ends.get(r.partition, 0):
                    left.discard(r.partition)
            seen += len(records)
            yield [read_letter(r) for r in records]

    def mark(letters: list[Letter]) -> None:
        consumer.commit(next_offsets([x.record for x in letters]))

    try:
        yield mark, batches()
    finally:
        consumer.close()


@dataclass
class Listing:
    """What `list_letters` found: the first `shown` letters and counts over all pending ones."""

    letters: list[Letter] = field(default_factory=list)
    pending: int = 0
    by_code: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "by_code": dict(self.by_code), "letters": [x.to_dict() for x in self.letters]}


def list_letters(cfg: StreamConfig, *, bus: Bus | None = None, show: int = 20, timeout_s: float = 30.0,
                 idle_s: float = 3.0) -> Listing:
    """The dead letters not yet redriven (reads the dead-letter topic; commits nothing)."""
    from tickerpulse.stream import registry

    own = bus is None
    bus = bus or registry.open_bus(cfg)
    out = Listing()
    try:
        bus.ensure_topics([cfg.dead_letter_topic])
        with _pending(bus, redrive_group(cfg.group), cfg.dead_letter_topic, 500, None, timeout_s, idle_s) as (_, it):
            for letters in it:
                for x in letters:
                    out.pending += 1
                    out.by_code[x.letter.code if x.letter else "unreadable"] += 1
                    if len(out.letters) < show:
                        out.letters.append(x)
    finally:
        if own:
            bus.close()
    return out


@dataclass
class RedriveResult:
    redriven: int = 0
    duplicates: int = 0  # the same payload again in this run: produced once
    skipped: list[Letter] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"redriven": self.redriven, "duplicates": self.duplicates,
                "skipped": [{"dlq_offset": x.record.offset, "problem": x.problem} for x in self.skipped]}


def redrive(cfg: StreamConfig, *, bus: Bus | None = None, limit: int | None = None, batch: int = 500,
            timeout_s: float = 30.0, idle_s: float = 3.0) -> RedriveResult:
    """Put the pending dead letters' original records back on `cfg.topic` (the first `limit` of them),
    then mark them redriven (commit). See the module docstring for the guarantees."""
    from tickerpulse.stream import registry

    own = bus is None
    bus = bus or registry.open_bus(cfg)
    res = RedriveResult()
    produced: set[str] = set()
    try:
        bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
        with _pending(bus, redrive_group(cfg.group), cfg.dead_letter_topic, batch, limit, timeout_s,
                      idle_s) as (mark, it):
            for letters in it:
                for x in letters:
                    if x.problem or x.letter is None:
                        res.skipped.append(x)
                        log.warning("dead letter at %s:%d not redriven: %s", cfg.dead_letter_topic, x.record.offset,
                                    x.problem)
                        continue
                    payload = x.letter.raw_payload()
                    digest = hashlib.sha256(payload).hexdigest()
                    if digest in produced:
                        res.duplicates += 1
                        continue
                    produced.add(digest)
                    bus.produce(cfg.topic, x.letter.post_id, payload)
                    res.redriven += 1
                bus.flush()  # the records are durable on the posts topic before they are marked redriven
                mark(letters)
    finally:
        if own:
            bus.close()
    return res
