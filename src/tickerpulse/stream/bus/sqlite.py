"""The embedded bus: topics as rows of one SQLite database in WAL mode, consumer-group offsets in another
table. Durable across crashes (a record is on disk once `flush` returns), safe for several producing
processes at once and one consumer per group.

Offsets are SQLite AUTOINCREMENT row ids: increasing and never reused within a topic, but not contiguous
(records of other topics take ids in between), as Kafka allows. Each topic has one partition (0).

Retention: with `retention_s` set (`log_retention_s` in StreamConfig, default one day), a consumer's commit
also deletes (at most every `trim_every_s`) the records of that topic which every committing group has
passed and which are older than `retention_s`; uncommitted records are never deleted, so a topic nobody
commits (the dead-letter topic before its first `dlq redrive`) is kept whole. Freed pages are reused by
SQLite (the file stops growing; it does not shrink).

Limitations: one consumer per group at a time (no partition rebalancing); one machine only (use Kafka
beyond that).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tickerpulse.stream.bus.base import Record, TopicPartition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_topic_id ON records(topic, id);
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, created REAL NOT NULL, next_offset INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    updated REAL NOT NULL, PRIMARY KEY (grp, topic, part)
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives process crashes (kill -9); only a power loss can drop the last commits.
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=60000")
    return con


class SqliteBus:
    """`Bus` on one SQLite file. Thread-safe; each process opens its own instance.

    Args:
        path: database file (created with its folder).
        linger_records: buffered records that trigger an automatic flush.
        linger_s: a produce() older than this since the last flush triggers one (bounds latency).
        retention_s: committed records older than this are deleted on commits (None or inf: never; see the
            module docstring).
        trim_every_s: at most one retention pass per topic this often.
    """

    def __init__(self, path: str | Path, linger_records: int = 500, linger_s: float = 0.2,
                 retention_s: float | None = None, trim_every_s: float = 10.0):
        if retention_s is not None and retention_s < 0:
            raise ValueError("retention_s must be >= 0 (or None to keep every record)")
        self.retention_s, self.trim_every_s = retention_s, trim_every_s
        self._last_trim: dict[str, float] = {}
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path)
        self._lock = threading.RLock()
        with self._lock:
            self._con.executescript(_SCHEMA)
        self._buf: list[tuple[str, bytes | None, bytes, float]] = []
        self.linger_records, self.linger_s = linger_records, linger_s
        self._last_flush = time.monotonic()

    # -- producing ---------------------------------------------------------------------------------
    def produce(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"value must be bytes, got {type(value).__name__}")
        with self._lock:
            self._buf.append((topic, key, bytes(value), time.time()))
            if len(self._buf) >= self.linger_records or time.monotonic() - self._last_flush >= self.linger_s:
                self.flush()

    def flush(self, timeout: float | None = None) -> int:
        with self._lock:
            if self._buf:
                buf, self._buf = self._buf, []
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    self._con.executemany(
                        "INSERT OR IGNORE INTO topics(topic, created) VALUES (?, ?)",
                        [(t, time.time()) for t in {b[0] for b in buf}],
                    )
                    self._con.executemany("INSERT INTO records(topic, key, value, ts) VALUES (?, ?, ?, ?)", buf)
                    # The high watermark survives `trim` (ids are never reused, but MAX(id) of an empty topic is gone).
                    self._con.executemany(
                        "UPDATE topics SET next_offset = (SELECT MAX(id) + 1 FROM records WHERE topic = ?) WHERE topic = ?",
                        [(t, t) for t in {b[0] for b in buf}],
                    )
                    self._con.execute("COMMIT")
                except BaseException:
                    self._con.execute("ROLLBACK")
                    self._buf = buf + self._buf
                    raise
            self._last_flush = time.monotonic()
            return 0

    # -- admin -------------------------------------------------------------------------------------
    def ensure_topics(self, topics: Sequence[str], partitions: int = 1) -> None:
        if partitions != 1:
            raise ValueError("the sqlite bus has one partition per topic (use --bus kafka for more)")
        with self._lock:
            self._con.executemany(
                "INSERT OR IGNORE INTO topics(topic, created) VALUES (?, ?)", [(t, time.time()) for t in topics]
            )

    def topics(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._con.execute("SELECT topic FROM topics ORDER BY topic")]

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            row = self._con.execute("SELECT next_offset FROM topics WHERE topic = ?", (topic,)).fetchone()
        return {0: int(row[0]) if row else 0}

    def count(self, topic: str, start: int = 0) -> int:
        """Records in `topic` with offset >= start."""
        with self._lock:
            (n,) = self._con.execute("SELECT COUNT(*) FROM records WHERE topic = ? AND id >= ?", (topic, start)).fetchone()
        return int(n)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._lock:
            rows = self._con.execute(
                "SELECT part, next_offset FROM offsets WHERE grp = ? AND topic = ?", (group, topic)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def trim(self, topic: str, older_than_s: float = 0.0) -> int:
        """Retention: delete records of `topic` below every committing group's offset and produced more than
        `older_than_s` ago (a group that never committed does not hold records back, as with Kafka's
        time/size retention); returns how many."""
        with self._lock:
            (low,) = self._con.execute("SELECT MIN(next_offset) FROM offsets WHERE topic = ?", (topic,)).fetchone()
            if low is None:
                return 0
            cur = self._con.execute("DELETE FROM records WHERE topic = ? AND id < ? AND ts <= ?",
                                    (topic, low, time.time() - older_than_s))
            return cur.rowcount

    def _retain(self, topics: Sequence[str]) -> None:
        """The retention pass a commit triggers (throttled per topic; see `retention_s`)."""
        if self.retention_s is None or self.retention_s == float("inf"):
            return
        now = time.monotonic()
        for t in topics:
            if now - self._last_trim.get(t, float("-inf")) >= self.trim_every_s:
                self._last_trim[t] = now
                self.trim(t, self.retention_s)

    def consumer(self, group: str, topics: Sequence[str]) -> "SqliteConsumer":
        return SqliteConsumer(self, group, list(topics))

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._con.close()

    def __enter__(self) -> "SqliteBus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteConsumer:
    """A consumer of `SqliteBus` (its own connection, so a slow poll never blocks producers' flushes)."""

    def __init__(self, bus: SqliteBus, group: str, topics: list[str]):
        self.bus, self.group, self.topics = bus, group, topics
        self._con = _connect(bus.path)
        self._pos: dict[TopicPartition, int] = {}
        for t in topics:
            self._pos[(t, 0)] = bus.committed(group, t).get(0, 0)
        self.pid = os.getpid()

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.01
        while True:
            out: list[Record] = []
            for (topic, part), pos in self._pos.items():
                room = max_records - len(out)
                if room <= 0:
                    break
                rows = self._con.execute(
                    "SELECT id, key, value, ts FROM records WHERE topic = ? AND id >= ? ORDER BY id LIMIT ?",
                    (topic, pos, room),
                ).fetchall()
                for rid, key, value, ts in rows:
                    out.append(Record(topic, part, int(rid), key, value, float(ts)))
                if rows:
                    self._pos[(topic, part)] = int(rows[-1][0]) + 1
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)

    def seek(self, topic: str, offset: int, partition: int = 0) -> None:
        """Move the in-memory position (the next poll starts at `offset`)."""
        self._pos[(topic, partition)] = offset

    def position(self) -> dict[TopicPartition, int]:
        return dict(self._pos)

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        offsets = dict(self._pos if offsets is None else offsets)
        now = time.time()
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.executemany(
                "INSERT INTO offsets(grp, topic, part, next_offset, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(grp, topic, part) DO UPDATE SET next_offset = excluded.next_offset, updated = excluded.updated",
                [(self.group, t, p, int(o), now) for (t, p), o in offsets.items()],
            )
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self.bus._retain(sorted({t for t, _ in offsets}))

    def lag(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for t in self.topics:
            start = self.bus.committed(self.group, t).get(0, 0)
            (n,) = self._con.execute("SELECT COUNT(*) FROM records WHERE topic = ? AND id >= ?", (t, start)).fetchone()
            out[(t, 0)] = int(n)
        return out

    def close(self) -> None:
        self._con.close()


def open_bus(cfg: object) -> SqliteBus:
    """Registry hook: the bus for a `StreamConfig` (`cfg.bus_path`, `cfg.log_retention_s`)."""
    return SqliteBus(getattr(cfg, "bus_path"), retention_s=getattr(cfg, "log_retention_s", None))
