"""Replay a file of posts as a live stream: JSONL or CSV, timed by the posts' own timestamps or by a
generated clock.

Columns (JSONL keys or CSV header; only `text` is required):
  id | post_id         (default `<file stem>-<row>`)
  text | body | title  (title + body are joined when both exist)
  created_at | created_utc | timestamp | date   (epoch seconds or ISO-8601; default: one post per `gap_s`)
  author, url, channel | subreddit, source
This reads the shared corpora as they are (twitter-financial-news-sentiment, FiQA: `id`, `text`).

Timing: gaps between consecutive posts are divided by `speed` (speed 0 = as fast as possible); with
`rebase` (default) the first post is stamped "now", so a replayed corpus looks live on the dashboard.
With speed 0 (as fast as possible) and `rebase`, each post is stamped with the wall time it is
produced. `loop` replays forever; cycle k > 0 suffixes ids with `~k` (new posts, not re-deliveries) and shifts
time forward.

Bad rows never stop a replay: a row that is not JSON, not an object, has no text, a timestamp out of range
or not finite, a >4300-digit number, nesting too deep, a CSV field over the csv module's limit, or a line
over `MAX_LINE_BYTES` is skipped with a `file:line: reason` warning (counted in `skipped`); invalid UTF-8
bytes become U+FFFD. Known limitation: one row dated centuries away from the others stretches the paced
timeline (use --speed 0); the processor clamps future event times either way.
"""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import DataError, iter_lines
from pydantic import ValidationError

from tickerpulse.stream.schema import MAX_POST_BYTES, MAX_TEXT_CHARS, Post, utcnow

log = logging.getLogger("tickerpulse.stream.replay")
# A JSONL line longer than this is skipped unread (a post is at most MAX_POST_BYTES on the bus; leave room
# for JSON escapes and extra columns), so one huge line cannot exhaust memory.
MAX_LINE_BYTES = 8 * MAX_POST_BYTES


def sample_corpus() -> Path:
    """The small synthetic corpus shipped with the package (for demos without the shared datasets)."""
    return Path(str(resources.files("tickerpulse.stream").joinpath("data", "sample_posts.jsonl")))


def _skip(path: Path, line: int, reason: str) -> None:
    log.warning("%s", DataError(path, line, f"skipped ({reason})"))


def read_rows(path: str | Path, on_skip: Callable[[], None] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, mapping) of a JSONL or CSV file. Rows that cannot be read are skipped with a
    `file:line: skipped (reason)` warning (and `on_skip()`); invalid UTF-8 becomes U+FFFD."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"replay file not found: {path}")

    def skip(line: int, reason: str) -> None:
        _skip(path, line, reason)
        if on_skip:
            on_skip()

    if path.suffix.lower() in {".csv", ".tsv"}:
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            start = 2
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): that row only
                    skip(start, f"bad CSV: {exc}")
                else:
                    yield start, row
                # the next row starts after this one's last line (a failed row has not advanced line_num yet)
                start = max(reader.line_num, start) + 1
    for i, line, error in iter_lines(path, max_bytes=MAX_LINE_BYTES, replace_invalid=True):
        if error is not None:
            skip(i, error)
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            skip(i, f"not JSON: {exc.msg}")
            continue
        except (ValueError, RecursionError) as exc:  # >4300-digit integers, nesting too deep
            skip(i, f"not JSON: {str(exc)[:120] or type(exc).__name__}")
            continue
        if not isinstance(row, dict):
            skip(i, f"a JSON {type(row).__name__}, not an object")
            continue
        yield i, row


def _first(row: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        v = row.get(k)
        if v not in (None, ""):
            return v
    return None


def row_to_post(row: dict[str, Any], default_id: str, source: str = "replay") -> Post:
    """One file row as a Post (timestamp may be absent: the caller stamps it).

    Raises:
        ValueError: the row has no text, or a field is unusable (pydantic's ValidationError is one).
    """
    title, body = _first(row, "title"), _first(row, "text", "body", "selftext")
    text = "\n\n".join(str(x) for x in (title, body) if x) if title and body else (body or title)
    if not text:
        raise ValueError("no text")
    ts = _first(row, "created_at", "created_utc", "timestamp", "date")
    return Post(
        id=str(_first(row, "id", "post_id") or default_id)[:200],
        source=str(_first(row, "source") or source),
        text=str(text)[:MAX_TEXT_CHARS],
        author=_first(row, "author"),
        created_at=ts if ts is not None else 0,
        url=_first(row, "url", "permalink"),
        channel=_first(row, "channel", "subreddit"),
        raw={"has_ts": ts is not None},
    )


def _reason(exc: Exception) -> str:
    """One line saying what is wrong with a row (the first field error of a ValidationError)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p)[:60] for p in first["loc"]) or "row"
        return f"{where}: {first['msg']}"[:300]
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


class ReplaySource:
    """Posts of a file, paced like a live stream.

    Args:
        path: JSONL/CSV file (see module docstring).
        speed: time compression (2 = twice as fast; 0 = no waiting at all).
        loop: start over at the end, forever (ids get `~<cycle>` suffixes).
        gap_s: spacing of generated timestamps for rows without one.
        rebase: stamp the first post "now" and keep the gaps.
        limit: stop after this many posts per cycle.
    """

    name = "replay"

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False, gap_s: float = 1.0,
                 rebase: bool = True, limit: int | None = None) -> None:
        if speed < 0:
            raise ValueError("--speed must be >= 0")
        self.path, self.speed, self.loop, self.gap_s, self.rebase, self.limit = Path(path), speed, loop, gap_s, rebase, limit
        self.skipped = 0

    def _count_skip(self) -> None:
        self.skipped += 1

    def _load(self) -> list[Post]:
        posts: list[Post] = []
        t0 = utcnow()
        for n, (line, row) in enumerate(read_rows(self.path, on_skip=self._count_skip)):
            if self.limit is not None and len(posts) >= self.limit:
                break
            try:
                post = row_to_post(row, f"{self.path.stem}-{line}")
            except Exception as exc:  # any bad row: skip it and go on, never kill the producer
                self.skipped += 1
                _skip(self.path, line, _reason(exc))
                continue
            if not (post.raw or {}).get("has_ts"):
                post = post.model_copy(update={"created_at": t0 + timedelta(seconds=n * self.gap_s)})
            posts.append(post.model_copy(update={"raw": None}))
        if not posts:
            raise DataError(self.path, 0, "no posts with text")
        posts.sort(key=lambda p: p.created_at)
        return posts

    def __iter__(self) -> Iterator[Post]:
        return self.iter_posts()

    def iter_posts(self, stop: threading.Event | None = None) -> Iterator[Post]:
        posts = self._load()
        first, last = posts[0].created_at, posts[-1].created_at
        period = (last - first) + timedelta(seconds=self.gap_s)
        start_wall = time.monotonic()
        origin = utcnow() if self.rebase else first
        cycle = 0
        while True:
            for p in posts:
                offset = (p.created_at - first) + period * cycle
                if self.speed > 0:
                    due = start_wall + offset.total_seconds() / self.speed
                    wait = due - time.monotonic()
                    if wait > 0 and (stop.wait(wait) if stop else (time.sleep(wait) or False)):
                        return
                if stop is not None and stop.is_set():
                    return
                if not self.rebase:
                    ts = p.created_at + period * cycle
                else:  # speed 0 has no clock of its own: stamp the wall time (never the future)
                    ts = utcnow() if self.speed == 0 else origin + offset
                yield p.model_copy(update={"created_at": ts, "id": p.id if cycle == 0 else f"{p.id}~{cycle}"})
            if not self.loop:
                return
            cycle += 1
