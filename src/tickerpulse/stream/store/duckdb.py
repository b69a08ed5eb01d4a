"""The embedded store: one DuckDB file with the document table plus posts, dead letters and heartbeats.

DuckDB lets one process write a file, and no other process open it meanwhile (not even read-only). So a
connection is held only for the duration of one operation (or one `session()` block: the processor
groups a micro-batch's writes in one, the dashboard a refresh's reads), and an open that meets another process's lock retries with
backoff for up to `lock_timeout` seconds. That is what lets the processor and the dashboard run as
separate processes on one file. `persistent=True` keeps one connection open instead (single-process use:
benchmarks, tests), saving ~50-100 ms per operation.

Times are stored as naive UTC TIMESTAMPs and returned as aware UTC datetimes.

Known limitations: every dashboard refresh opens the file (tens of ms); a writer blocks readers for the
length of one batch write; aggregates scan the window (fine for millions of rows, not billions).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from tickerpulse.stream.schema import DeadLetter, PostMark, SentimentDoc
from tickerpulse.stream.store.base import Point, TickerStat, TopBy, top

_DOC_COLS = ["doc_id", "ts", "post_id", "ticker", "asset_class", "sentiment", "score", "reasoning", "text",
             "source", "channel", "author", "url", "model_version", "ingested_at", "processed_at", "latency_ms"]
_POST_COLS = ["post_id", "source", "created_at", "ingested_at", "processed_at", "n_tickers", "tickers"]
_DL_COLS = ["dl_id", "stage", "code", "reason", "payload", "payload_bytes", "attempts", "topic", "partition",
            "offset", "post_id", "ticker", "created_at", "payload_encoding"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    doc_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, post_id VARCHAR NOT NULL, ticker VARCHAR NOT NULL,
    asset_class VARCHAR NOT NULL, sentiment VARCHAR NOT NULL, score DOUBLE NOT NULL, reasoning VARCHAR,
    text VARCHAR, source VARCHAR, channel VARCHAR, author VARCHAR, url VARCHAR, model_version VARCHAR,
    ingested_at TIMESTAMP, processed_at TIMESTAMP NOT NULL, latency_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS posts (
    post_id VARCHAR NOT NULL, source VARCHAR, created_at TIMESTAMP, ingested_at TIMESTAMP,
    processed_at TIMESTAMP, n_tickers INTEGER, tickers VARCHAR
);
CREATE TABLE IF NOT EXISTS dead_letters (
    dl_id VARCHAR PRIMARY KEY, stage VARCHAR, code VARCHAR, reason VARCHAR, payload VARCHAR,
    payload_bytes BIGINT, attempts INTEGER, topic VARCHAR, "partition" INTEGER, "offset" BIGINT,
    post_id VARCHAR, ticker VARCHAR, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS heartbeats (name VARCHAR PRIMARY KEY, updated TIMESTAMP, metrics VARCHAR);
-- added with whole (redrivable) dead-letter payloads; older files get the column on open
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_encoding VARCHAR DEFAULT 'utf-8';
"""


def _replace(con: duckdb.DuckDBPyConnection, table: str, key: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Upsert by `key` (the first column of `rows`) as delete + insert in the caller's transaction.

    Why not a PRIMARY KEY with INSERT OR REPLACE: every open of the file would load the key index before
    the first write (~2 ms per row at 10^4 rows, growing with the table), and the file is reopened per
    batch. One writer holds the file lock at a time, so delete + insert keeps keys unique.
    """
    if not rows:
        return
    con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT unnest(?::VARCHAR[]))", [[r[0] for r in rows]])
    _insert(con, f"INSERT INTO {table} ({', '.join(cols)})", rows)


def _insert(con: duckdb.DuckDBPyConnection, head: str, rows: list[tuple[Any, ...]], chunk: int = 500) -> None:
    """Multi-row VALUES inserts: DuckDB's executemany runs one statement per row (~10-30 ms each)."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        con.execute(f"{head} VALUES {', '.join([one] * len(part))}", [v for r in part for v in r])


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc)


def _iso(dt: datetime | None) -> str:
    return "" if dt is None else dt.replace(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


class DuckDBStore:
    """`Store` on one DuckDB file.

    Args:
        path: database file (created with its folder unless read_only).
        read_only: open read-only (dashboards); a missing file reads as empty.
        persistent: keep one connection open (single-process use) instead of one per operation.
        lock_timeout: seconds to keep retrying when another process holds the file.
    """

    def __init__(self, path: str | Path, read_only: bool = False, persistent: bool = False, lock_timeout: float = 30.0):
        self.path = Path(path)
        self.read_only, self.persistent, self.lock_timeout = read_only, persistent, lock_timeout
        self._lock = threading.RLock()
        self._held: duckdb.DuckDBPyConnection | None = None
        self._in_tx = False
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._conn() as con:
                con.execute(_SCHEMA)
            if persistent:
                self._held = self._open()

    # -- connections -------------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The held connection (persistent or a session's), else one opened for this operation."""
        with self._lock:
            if self._held is not None:
                yield self._held
                return
            con = self._open()
            try:
                yield con
            finally:
                con.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection (and the file lock) for a group of operations in one transaction: writes
        are committed together; reads see one snapshot and pay for one open. Nests."""
        with self._lock:
            if self._in_tx:
                yield
                return
            if self._held is None and self.read_only and not self.path.exists():
                yield  # nothing to read yet
                return
            opened = self._held is None
            if opened:
                self._held = self._open()
            try:
                self._held.execute("BEGIN TRANSACTION")
                self._in_tx = True
                yield
                self._held.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._held.execute("ROLLBACK")
                raise
            finally:
                self._in_tx = False
                if opened:
                    self._held.close()
                    self._held = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside a transaction (the current session's, or one for this operation)."""
        with self.session():
            assert self._held is not None
            yield self._held

    def _empty(self) -> bool:
        return self.read_only and not self.path.exists() and self._held is None

    # -- writes ------------------------------------------------------------------------------------
    def upsert(self, docs: Sequence[SentimentDoc]) -> int:
        if not docs:
            return 0
        rows = []
        for d in docs:
            rows.append((d.doc_id, _naive(d.timestamp), d.post_id, d.ticker, d.asset_class, d.sentiment, d.score,
                         d.reasoning, d.text, d.source, d.channel, d.author, d.url, d.model_version,
                         _naive(d.ingested_at), _naive(d.processed_at), d.latency_ms))
        rows = list({r[0]: r for r in rows}.values())  # one row per doc_id (the last wins)
        with self._tx() as con:
            _replace(con, "docs", "doc_id", _DOC_COLS, rows)
        return len(rows)

    def mark_posts(self, marks: Sequence[PostMark]) -> None:
        if not marks:
            return
        rows = [(m.post_id, m.source, _naive(m.created_at), _naive(m.ingested_at), _naive(m.processed_at),
                 m.n_tickers, ",".join(m.tickers)) for m in marks]
        rows = list({r[0]: r for r in rows}.values())
        with self._tx() as con:
            _replace(con, "posts", "post_id", _POST_COLS, rows)

    def dead_letter(self, items: Sequence[DeadLetter]) -> None:
        if not items:
            return
        with self._tx() as con:
            for d in items:
                row = (d.dl_id, d.stage, d.code, d.reason, d.payload, d.payload_bytes, d.attempts, d.topic,
                       d.partition, d.offset, d.post_id, d.ticker, _naive(d.created_at), d.payload_encoding)
                prev = con.execute("SELECT attempts FROM dead_letters WHERE dl_id = ?", (d.dl_id,)).fetchone()
                if prev is not None:
                    con.execute("UPDATE dead_letters SET attempts = ?, reason = ? WHERE dl_id = ?",
                                (max(int(prev[0]), d.attempts), d.reason, d.dl_id))
                else:
                    cols = ", ".join(f'"{c}"' for c in _DL_COLS)
                    con.execute(f"INSERT INTO dead_letters ({cols}) VALUES ({', '.join('?' * len(_DL_COLS))})", row)

    def heartbeat(self, name: str, metrics: Mapping[str, Any]) -> None:
        with self._conn() as con:
            con.execute("INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                        (name, _naive(datetime.now(timezone.utc)), json.dumps(dict(metrics), default=str)))

    # -- reads -------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        keys = ["docs", "posts", "posts_with_ticker", "posts_without_ticker", "dead_letters", "tickers"]
        if self._empty():
            return dict.fromkeys(keys, 0)
        with self._conn() as con:
            row = con.execute(
                "SELECT (SELECT COUNT(*) FROM docs), (SELECT COUNT(*) FROM posts),"
                " (SELECT COUNT(*) FROM posts WHERE n_tickers > 0), (SELECT COUNT(*) FROM posts WHERE n_tickers = 0),"
                " (SELECT COUNT(*) FROM dead_letters), (SELECT COUNT(DISTINCT ticker) FROM docs)"
            ).fetchone()
        return dict(zip(keys, (int(x) for x in row)))

    def _anchor(self, con: duckdb.DuckDBPyConnection, now: datetime | None) -> tuple[datetime | None, datetime | None]:
        first, last = con.execute("SELECT MIN(ts), MAX(ts) FROM docs").fetchone()
        anchor = _naive(now) if now is not None else last
        return anchor, first

    def ticker_stats(self, window_s: float = 3600, limit: int = 50, by: TopBy = "mentions",
                     now: datetime | None = None) -> list[TickerStat]:
        if self._empty():
            return []
        with self._conn() as con:
            anchor, first = self._anchor(con, now)
            if anchor is None:
                return []
            since = anchor - timedelta(seconds=window_s)
            rows = con.execute(
                "SELECT ticker, any_value(asset_class), COUNT(*), AVG(score),"
                " COUNT(*) FILTER (WHERE sentiment = 'positive'), COUNT(*) FILTER (WHERE sentiment = 'neutral'),"
                " COUNT(*) FILTER (WHERE sentiment = 'negative'), MAX(ts)"
                " FROM docs WHERE ts > ? AND ts <= ? GROUP BY ticker",
                (since, anchor),
            ).fetchall()
        # Rate over the part of the window that has data at all (a fresh stream is not "quiet").
        span_s = max(60.0, min(window_s, (anchor - max(first, since)).total_seconds()))
        stats = [TickerStat(t, a, int(n), float(m), int(p), int(z), int(q), n / (span_s / 60), _iso(ls))
                 for t, a, n, m, p, z, q, ls in rows]
        return top(stats, by, limit)

    def timeseries(self, ticker: str, bucket_s: int = 60, window_s: float = 3600,
                   now: datetime | None = None) -> list[Point]:
        if self._empty():
            return []
        bucket_s = max(1, int(bucket_s))
        with self._conn() as con:
            anchor, _ = self._anchor(con, now)
            if anchor is None:
                return []
            rows = con.execute(
                "SELECT floor(epoch(ts) / ?) * ? AS b, COUNT(*), AVG(score) FROM docs"
                " WHERE ticker = ? AND ts > ? AND ts <= ? GROUP BY b ORDER BY b",
                (bucket_s, bucket_s, ticker, anchor - timedelta(seconds=window_s), anchor),
            ).fetchall()
        return [Point(datetime.fromtimestamp(float(b), timezone.utc).isoformat().replace("+00:00", "Z"), int(n), float(m))
                for b, n, m in rows]

    def latest(self, limit: int = 20, ticker: str | None = None) -> list[SentimentDoc]:
        if self._empty():
            return []
        where, args = ("WHERE ticker = ?", [ticker]) if ticker else ("", [])
        with self._conn() as con:
            rows = con.execute(
                f"SELECT {', '.join(_DOC_COLS)} FROM docs {where} ORDER BY processed_at DESC, doc_id LIMIT ?",
                (*args, int(limit)),
            ).fetchall()
        out = []
        for r in rows:
            d = dict(zip(_DOC_COLS, r))
            d["@timestamp"] = _aware(d.pop("ts"))
            d["ingested_at"] = _aware(d["ingested_at"]) or d["@timestamp"]
            d["processed_at"] = _aware(d["processed_at"])
            out.append(SentimentDoc.model_validate(d))
        return out

    def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        if self._empty():
            return []
        with self._conn() as con:
            # SELECT *: a file written before `payload_encoding` existed, opened read-only, lacks the column
            cur = con.execute("SELECT * FROM dead_letters ORDER BY created_at DESC LIMIT ?", (int(limit),))
            names = [c[0] for c in cur.description]
            rows = cur.fetchall()
        out = []
        for r in rows:
            d = {k: v for k, v in zip(names, r) if k in _DL_COLS}
            d["created_at"] = _aware(d["created_at"])
            d["payload_encoding"] = d.get("payload_encoding") or "utf-8"
            out.append(DeadLetter.model_validate(d))
        return out

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        if self._empty():
            return {}
        with self._conn() as con:
            rows = con.execute("SELECT name, updated, metrics FROM heartbeats").fetchall()
        return {n: {**json.loads(m), "updated": _iso(u)} for n, u, m in rows}

    def latency_sample(self, limit: int = 5000) -> list[dict[str, float]]:
        if self._empty():
            return []
        with self._conn() as con:
            rows = con.execute(
                "SELECT epoch_ms(processed_at) - epoch_ms(ingested_at), latency_ms FROM docs"
                " ORDER BY processed_at DESC LIMIT ?", (int(limit),)
            ).fetchall()
        return [{"lag_ms": float(a), "latency_ms": float(b or 0.0)} for a, b in rows]

    def doc_ids(self) -> list[str]:
        """Every document id (tests count duplicates with it)."""
        with self._conn() as con:
            return [r[0] for r in con.execute("SELECT doc_id FROM docs").fetchall()]

    def close(self) -> None:
        with self._lock:
            if self._held is not None:
                self._held.close()
                self._held = None


def open_store(cfg: object, read_only: bool = False) -> DuckDBStore:
    """Registry hook: the store for a `StreamConfig` (`cfg.db`)."""
    return DuckDBStore(getattr(cfg, "db"), read_only=read_only)
