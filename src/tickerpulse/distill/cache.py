"""On-disk teacher cache (SQLite): (endpoint, model, prompt hash, target, text) -> answer or rejection.

Each result is committed the moment it arrives, so a job killed at any point loses at most the requests
that were in flight, and a rerun sends only what is missing. WAL mode plus a busy timeout make it safe for
several jobs (processes) sharing one cache file. Transport failures are never cached (a rerun retries
them); rejections are (the teacher already answered badly `max_invalid` times: rerun with
`--retry-rejected` to ask again).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

from tickerpulse.distill.teacher import Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    target TEXT,
    text TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
    answer TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    response_format TEXT,
    reasoning_source TEXT NOT NULL DEFAULT 'teacher',
    retries TEXT,
    labelled_at REAL NOT NULL
)
"""


def cache_key(endpoint: str, model: str, prompt_hash: str, text: str, target: str | None) -> str:
    """Stable hex key; the target is part of the question, so it is part of the key."""
    raw = "\x00".join([endpoint.rstrip("/"), model, prompt_hash, target or "", text])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class Cache:
    """A small key -> Outcome store. Use from one thread (the job's event loop); one connection each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a killed process
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute(_SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, Outcome]:
        """Cached outcomes for the keys that have one."""
        found: dict[str, Outcome] = {}
        for lo in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            chunk = keys[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT key, status, answer, reason, attempts, prompt_tokens, completion_tokens, response_format, "
                f"reasoning_source, retries, labelled_at FROM results WHERE key IN ({marks})",
                chunk,
            ):
                found[row[0]] = Outcome(
                    status=row[1],
                    answer=json.loads(row[2]) if row[2] else None,
                    reason=row[3],
                    attempts=row[4],
                    prompt_tokens=row[5],
                    completion_tokens=row[6],
                    response_format=row[7],
                    reasoning_source=row[8],
                    retries=Counter(json.loads(row[9] or "{}")),
                    labelled_at=row[10],
                )
        return found

    def put(self, key: str, endpoint: str, model: str, prompt_hash: str, text: str, target: str | None, out: Outcome) -> None:
        """Store an ok/rejected outcome and commit (autocommit mode). Failed outcomes are ignored."""
        if out.status not in ("ok", "rejected"):
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                key, endpoint.rstrip("/"), model, prompt_hash, target, text, out.status,
                json.dumps(out.answer, ensure_ascii=False) if out.answer is not None else None,
                out.reason, out.attempts, out.prompt_tokens, out.completion_tokens, out.response_format,
                out.reasoning_source, json.dumps(dict(out.retries)), out.labelled_at or time.time(),
            ),
        )

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
