"""The local processor: micro-batches from the bus -> parse -> tickers -> model -> store -> commit.

One loop, top to bottom (`run_processor`):
  1. poll up to `max_records` records;
  2. `process_records`: parse each (malformed -> dead letter with the reason), find its tickers (posts
     without one are marked as processed, not lost), score the (post, ticker) items in batches with
     retries and backoff (items that still fail alone -> dead letters with the attempts), build documents
     with deterministic ids;
  3. write documents, post marks, dead letters and a heartbeat in one store transaction;
  4. only then commit the offsets.
Scorer faults are not item faults: while the scorer is down or answers 429/5xx the processor pauses on
the batch (heartbeat `paused`) and neither commits nor dead-letters; a refusal (401/403) stops it with
nothing of the batch written (`ScorerFatal`). Limitation (Kafka): a pause longer than the consumer's
`max.poll.interval.ms` (5 min by default) makes it leave its group; the commit then fails, the processor
exits and is restarted, and the batch is re-delivered (nothing lost).
A crash anywhere before 4 re-delivers the batch on restart; the writes are idempotent upserts, so the
store ends up with every post exactly once (at-least-once delivery + idempotent sink = exactly-once
results). `process_records` is pure apart from the scorer, so the Spark processor reuses it per batch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from tickerpulse.stream.bus.base import Bus, Record, next_offsets
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.schema import (DeadLetter, Post, PostError, PostMark, SentimentDoc, clamp_event_time,
                                       parse_post, safe_utc, utcnow)
from tickerpulse.stream.scoring import (ItemRejected, Scorer, ScorerFatal, ScorerUnavailable, ScoringInterrupted,
                                        backoff_delay)
from tickerpulse.stream.store.base import Store, percentiles
from tickerpulse.task.questions import questions_of
from tickerpulse.task.tickers import asset_class

log = logging.getLogger("tickerpulse.stream.processor")
IDLE_HEARTBEAT_S = 5.0  # an idle processor still reports this often (the dashboard calls 15 s of silence stale)


@dataclass
class BatchResult:
    """What one micro-batch produced, ready to write."""

    docs: list[SentimentDoc] = field(default_factory=list)
    marks: list[PostMark] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    posts: int = 0
    items: int = 0
    model_ms: float = 0.0  # wall time spent in the scorer
    retries: int = 0


def score_with_retry(scorer: Scorer, items: Sequence[tuple[str, str | None]], *, max_attempts: int = 3,
                     backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                     max_backoff_s: float = 30.0, max_pause_s: float | None = None,
                     stop: threading.Event | None = None, on_pause: Callable[[str, float], None] | None = None,
                     ) -> tuple[list[dict[str, Any] | None], list[tuple[int, int, str]], int]:
    """Score `items`, telling scorer faults from item faults (see `tickerpulse.stream.scoring`).

    - `ScorerUnavailable`: pause on the same call (backoff from `backoff_s` doubling up to `max_backoff_s`,
      at least the server's Retry-After) and try again, without counting an attempt against the items;
      after `max_pause_s` seconds of pausing (None: no limit) the exception propagates. A `stop` set
      during a pause raises `ScoringInterrupted`. `on_pause(reason, delay)` is called before each wait.
    - `ScorerFatal` propagates at once.
    - any other exception is an item fault: the batch is retried (`max_attempts`, exponential backoff;
      `ItemRejected` is not retried), then each item is scored alone the same way, so one poison item
      does not sink its batch.

    Returns (answers, failures, retries): `answers[i]` is None for an item that failed alone; `failures`
    lists (index, attempts, reason) of those.
    """
    retries = 0
    paused = 0.0

    def wait(delay: float) -> None:
        if stop is None:
            sleep(delay)
        elif stop.wait(delay):
            raise ScoringInterrupted("stopped while the scorer was unavailable")

    def call(batch: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
        nonlocal retries, paused
        k = 0
        while True:
            try:
                return scorer.score(batch)
            except ScorerUnavailable as exc:
                delay = backoff_delay(k, backoff_s, max_backoff_s, exc.retry_after)
                if max_pause_s is not None and paused + delay > max_pause_s:
                    raise
                log.warning("scorer unavailable, pausing %.1fs (nothing committed or dead-lettered): %s", delay, exc)
                if on_pause:
                    on_pause(str(exc)[:500], delay)
                retries, k, paused = retries + 1, k + 1, paused + delay
                wait(delay)

    def attempt(batch: Sequence[tuple[str, str | None]]) -> tuple[list[dict[str, Any]] | None, int, str]:
        nonlocal retries
        reason = ""
        for k in range(max_attempts):
            if k:
                retries += 1
                wait(backoff_s * 2 ** (k - 1))
            try:
                return call(batch), k + 1, ""
            except (ScorerUnavailable, ScorerFatal, ScoringInterrupted):
                raise
            except Exception as exc:  # an item fault: retried, then isolated; the reason is kept
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("scoring %d item(s) failed (attempt %d/%d): %s", len(batch), k + 1, max_attempts, reason)
                if isinstance(exc, ItemRejected):  # the same request would be rejected again
                    return None, k + 1, reason
        return None, max_attempts, reason

    answers, first_tries, reason = attempt(items)
    if answers is not None:
        return list(answers), [], retries
    if len(items) == 1:
        return [None], [(0, first_tries, reason)], retries
    out: list[dict[str, Any] | None] = []
    failures: list[tuple[int, int, str]] = []
    for i, item in enumerate(items):
        one, tries, why = attempt([item])
        out.append(one[0] if one else None)
        if one is None:
            failures.append((i, first_tries + tries, why))
    return out, failures, retries


def post_tickers(text: str, limit: int, *, names: bool = False) -> list[str]:
    """The tickers a post is judged for: the task's one rule (`questions_of`), at most `limit`; `names`
    (the stream's `names` setting, on by default): company names count too ("Tesla is tanking" -> TSLA).
    A post that names none is marked processed, not judged: the stream does not ask about the market."""
    return [q.ticker for q in questions_of(text, limit=limit, names=names) if q.ticker is not None]


def process_records(records: Sequence[Record], scorer: Scorer, cfg: StreamConfig,
                    sleep: Callable[[float], None] = time.sleep, *, stop: threading.Event | None = None,
                    on_pause: Callable[[str, float], None] | None = None,
                    max_pause_s: float | None = None) -> BatchResult:
    """Turn one micro-batch of bus records into documents, post marks and dead letters (no I/O but the
    scorer).

    Raises (the batch must then not be committed): ScorerFatal; ScorerUnavailable after `max_pause_s`
    seconds of pausing; ScoringInterrupted when `stop` is set during a pause. See `score_with_retry`."""
    res = BatchResult()
    parsed: list[tuple[Record, Post]] = []
    seen: set[str] = set()
    clamped: list[tuple[str, datetime]] = []
    for r in records:
        try:
            post = parse_post(r.value, max_bytes=cfg.max_post_bytes)
            # Normalise: a bus timestamp out of range (a hostile Kafka producer's) becomes now; the event
            # time never lies past ingest + max_future_s (a post dated 2099 must not own every window).
            ingested = safe_utc(r.timestamp)
            r = replace(r, timestamp=ingested.timestamp())
            when = clamp_event_time(post.created_at, ingested, cfg.max_future_s)
            if when != post.created_at:
                clamped.append((post.id, post.created_at))
                post = post.model_copy(update={"created_at": when})
        except Exception as exc:  # PostError, or anything else: a record must never stop the stream
            code, reason = ((exc.code, exc.reason) if isinstance(exc, PostError)
                            else ("invalid", f"{type(exc).__name__}: {exc}"))
            res.dead.append(DeadLetter.build(r.value, stage="parse", code=code, reason=reason, topic=r.topic,
                                             partition=r.partition, offset=r.offset,
                                             max_payload_bytes=cfg.max_post_bytes))
            continue
        if post.id in seen:  # the same post twice in one batch: one judgement is enough
            continue
        seen.add(post.id)
        parsed.append((r, post))
    res.posts = len(parsed)
    if clamped:  # the claimed times stay visible here (documents carry the clamped one)
        log.warning("%d post(s) dated more than %.0f s after ingest: event time clamped (first: %s claimed %s)",
                    len(clamped), cfg.max_future_s, clamped[0][0][:80], clamped[0][1].isoformat())

    plan: list[tuple[Record, Post, str]] = []
    now = utcnow()
    for r, post in parsed:
        tickers = post_tickers(post.text, cfg.max_tickers_per_post, names=cfg.names)
        res.marks.append(PostMark(post_id=post.id, source=post.source, created_at=post.created_at,
                                  ingested_at=r.timestamp, processed_at=now, n_tickers=len(tickers), tickers=tickers))
        plan += [(r, post, t) for t in tickers]
    res.items = len(plan)

    for i in range(0, len(plan), cfg.score_batch):
        chunk = plan[i : i + cfg.score_batch]
        t0 = time.perf_counter()
        answers, failures, retries = score_with_retry(
            scorer, [(p.text, t) for _, p, t in chunk], max_attempts=cfg.max_attempts, backoff_s=cfg.backoff_s,
            sleep=sleep, max_backoff_s=cfg.max_backoff_s, max_pause_s=max_pause_s, stop=stop, on_pause=on_pause,
        )
        ms = (time.perf_counter() - t0) * 1000
        res.model_ms += ms
        res.retries += retries
        done = utcnow()
        for (r, post, ticker), ans in zip(chunk, answers):
            if ans is not None:
                res.docs.append(SentimentDoc.build(post, ans, ticker=ticker, asset_class=asset_class(ticker),
                                                   model_version=scorer.model_version, ingested_at=r.timestamp,
                                                   latency_ms=ms, processed_at=done))
        for idx, attempts, reason in failures:
            r, post, ticker = chunk[idx]
            res.dead.append(DeadLetter.build(r.value, stage="score", code="model_failed", reason=reason,
                                             attempts=attempts, topic=r.topic, partition=r.partition,
                                             offset=r.offset, post_id=post.id, ticker=ticker))
    return res


class Health:
    """Rolling pipeline metrics for the heartbeat: posts/s over the last `window_s`, lag percentiles."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self.events: deque[tuple[float, int]] = deque()
        self.started = time.time()
        self.totals = {"records": 0, "posts": 0, "docs": 0, "dead_letters": 0, "retries": 0, "batches": 0}
        self.last: dict[str, Any] = {}

    def rate(self) -> float:
        """Posts per second over the last `window_s` (or since the start)."""
        now = time.time()
        while self.events and self.events[0][0] < now - self.window_s:
            self.events.popleft()
        span = max(1.0, min(self.window_s, now - self.started))
        return round(sum(n for _, n in self.events) / span, 3)

    def update(self, records: Sequence[Record], res: BatchResult, write_ms: float, lag_records: int) -> dict[str, Any]:
        self.events.append((time.time(), res.posts))
        for k, v in (("records", len(records)), ("posts", res.posts), ("docs", len(res.docs)),
                     ("dead_letters", len(res.dead)), ("retries", res.retries), ("batches", 1)):
            self.totals[k] += v
        lags = [(d.processed_at.timestamp() - d.ingested_at.timestamp()) * 1000 for d in res.docs]
        self.last = {
            "posts_per_s": self.rate(),
            "lag_records": lag_records,
            "lag_ms": percentiles(lags, (50, 95)),
            "model_ms_per_item": round(res.model_ms / res.items, 2) if res.items else None,
            "batch_write_ms": round(write_ms, 1),
            **self.totals,
        }
        return self.last


def _dead_letter_value(d: DeadLetter) -> bytes:
    return json.dumps(d.to_dict(), ensure_ascii=False).encode("utf-8")


def run_processor(cfg: StreamConfig, stop: threading.Event | None = None, until_idle: float | None = None, *,
                  scorer: Scorer | None = None, bus: Bus | None = None, store: Store | None = None,
                  on_batch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Consume `cfg.topic` as group `cfg.group` until `stop` is set (or `until_idle` seconds pass with no
    record). Builds the bus, store and scorer from `cfg` unless given. Returns the totals.

    Scorer faults: while the scorer is unavailable (at start, or mid-batch) the processor waits with
    backoff, heartbeat status `waiting` / `paused`, committing nothing; a stop during the wait leaves
    the batch uncommitted (re-delivered on restart).
    Raises:
        ScorerFatal: the scorer refuses us (e.g. HTTP 401); the current batch is not written or committed.
    """
    from tickerpulse.stream import registry
    from tickerpulse.stream.scoring import scorer_from_config

    stop = stop or threading.Event()
    own = [x is None for x in (bus, store, scorer)]
    bus = bus or registry.open_bus(cfg)
    store = store or registry.open_store(cfg)
    scorer = scorer or scorer_from_config(cfg)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    consumer = bus.consumer(cfg.group, [cfg.topic])
    health = Health()
    meta = {"pid": os.getpid(), "scorer": scorer.name, "model_version": getattr(scorer, "model_version", None),
            "bus": cfg.bus, "store": cfg.store, "topic": cfg.topic, "group": cfg.group,
            "started_at": datetime.fromtimestamp(health.started, timezone.utc).isoformat()}
    session = getattr(store, "session", None)

    def waiting(status: str) -> Callable[[str, float], None]:
        def beat(reason: str, delay: float) -> None:
            store.heartbeat("processor", {**meta, **health.last, **health.totals, "status": status,
                                          "reason": reason, "retry_in_s": round(delay, 2)})
        return beat

    try:
        ready = getattr(scorer, "ready", None)
        if callable(ready):  # learn the model version (document ids) before the first record
            try:
                meta["model_version"] = ready(stop=stop, on_wait=waiting("waiting"), backoff_s=cfg.backoff_s,
                                              max_backoff_s=cfg.max_backoff_s)
            except ScoringInterrupted:
                stop.set()
            except ScorerFatal as exc:
                store.heartbeat("processor", {**meta, "status": "failed", "reason": str(exc)[:500]})
                raise
        log.info("processor: %s -> %s (%s), scorer %s", cfg.topic, cfg.store, cfg.group, meta["model_version"])
        store.heartbeat("processor", {**meta, "status": "running", **health.totals})
        idle_since = last_beat = time.monotonic()
        while not stop.is_set():
            records = consumer.poll(cfg.max_records, cfg.poll_timeout)
            if not records:
                if until_idle is not None and time.monotonic() - idle_since >= until_idle:
                    break
                if time.monotonic() - last_beat >= IDLE_HEARTBEAT_S:  # alive and caught up, not stale
                    store.heartbeat("processor", {**meta, "status": "idle", **health.last,
                                                  "posts_per_s": health.rate(), "lag_records": 0})
                    last_beat = time.monotonic()
                continue
            idle_since = time.monotonic()
            try:
                res = process_records(records, scorer, cfg, stop=stop, on_pause=waiting("paused"))
            except ScoringInterrupted:
                break  # not committed: re-delivered on restart
            except ScorerFatal as exc:
                store.heartbeat("processor", {**meta, **health.last, **health.totals, "status": "failed",
                                              "reason": str(exc)[:500]})
                raise
            t0 = time.perf_counter()
            docs = list({d.doc_id: d for d in res.docs}.values())
            marks = list({m.post_id: m for m in res.marks}.values())
            lag = sum(consumer.lag().values()) - len(records)
            with (session() if session else _null()):
                store.upsert(docs)
                store.mark_posts(marks)
                store.dead_letter(res.dead)
                metrics = health.update(records, res, (time.perf_counter() - t0) * 1000, max(0, lag))
                store.heartbeat("processor", {**meta, "status": "running", **metrics})
            for d in res.dead:
                bus.produce(cfg.dead_letter_topic, d.dl_id, _dead_letter_value(d))
            bus.flush()
            consumer.commit(next_offsets(records))  # only after the store write: a crash before re-delivers
            last_beat = time.monotonic()
            if on_batch:
                on_batch(metrics)
        store.heartbeat("processor", {**meta, "status": "stopped", **health.last, **health.totals})
    finally:
        consumer.close()
        if own[2]:
            scorer.close()
        if own[1]:
            store.close()
        if own[0]:
            bus.close()
    return dict(health.totals)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
