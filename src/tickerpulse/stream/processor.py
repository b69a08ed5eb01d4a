"""The local processor: micro-batches from the bus -> parse -> tickers -> model -> store -> commit.

One loop, top to bottom (`run_processor`):
  1. poll up to `max_records` records;
  2. `process_records`: parse each (malformed -> dead letter with the reason), extract tickers (posts
     without one are marked as processed, not lost), score the (post, ticker) items in batches with
     retries and backoff (items that still fail -> dead letters with the attempts), build documents with
     deterministic ids;
  3. write documents, post marks, dead letters and a heartbeat in one store transaction;
  4. only then commit the offsets.
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
from tickerpulse.stream.scoring import Scorer
from tickerpulse.stream.store.base import Store, percentiles
from tickerpulse.stream.tickers import asset_class, extract_tickers

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
                     backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep
                     ) -> tuple[list[dict[str, Any] | None], list[tuple[int, int, str]], int]:
    """Score `items`; on failure retry with exponential backoff, then isolate: each item is scored alone
    (with its own retries) so one poison item does not sink its batch.

    Returns (answers, failures, retries): `answers[i]` is None for a failed item; `failures` lists
    (index, attempts, reason) of those.
    """
    retries = 0

    def attempt(batch: Sequence[tuple[str, str | None]]) -> tuple[list[dict[str, Any]] | None, int, str]:
        nonlocal retries
        reason = ""
        for k in range(max_attempts):
            if k:
                retries += 1
                sleep(backoff_s * 2 ** (k - 1))
            try:
                return scorer.score(batch), k + 1, ""
            except Exception as exc:  # any backend failure is retryable; the reason is kept
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("scoring %d item(s) failed (attempt %d/%d): %s", len(batch), k + 1, max_attempts, reason)
        return None, max_attempts, reason

    answers, _, reason = attempt(items)
    if answers is not None:
        return list(answers), [], retries
    if len(items) == 1:
        return [None], [(0, max_attempts, reason)], retries
    out: list[dict[str, Any] | None] = []
    failures: list[tuple[int, int, str]] = []
    for i, item in enumerate(items):
        one, tries, why = attempt([item])
        out.append(one[0] if one else None)
        if one is None:
            failures.append((i, max_attempts + tries, why))
    return out, failures, retries


def process_records(records: Sequence[Record], scorer: Scorer, cfg: StreamConfig,
                    sleep: Callable[[float], None] = time.sleep) -> BatchResult:
    """Turn one micro-batch of bus records into documents, post marks and dead letters (no I/O but the
    scorer)."""
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
            code, reason = (exc.code, exc.reason) if isinstance(exc, PostError) else ("invalid", f"{type(exc).__name__}: {exc}")
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
        tickers = extract_tickers(post.text)[: cfg.max_tickers_per_post]
        res.marks.append(PostMark(post_id=post.id, source=post.source, created_at=post.created_at,
                                  ingested_at=r.timestamp, processed_at=now, n_tickers=len(tickers), tickers=tickers))
        plan += [(r, post, t) for t in tickers]
    res.items = len(plan)

    for i in range(0, len(plan), cfg.score_batch):
        chunk = plan[i : i + cfg.score_batch]
        t0 = time.perf_counter()
        answers, failures, retries = score_with_retry(
            scorer, [(p.text, t) for _, p, t in chunk], max_attempts=cfg.max_attempts, backoff_s=cfg.backoff_s, sleep=sleep
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
    record). Builds the bus, store and scorer from `cfg` unless given. Returns the totals."""
    from tickerpulse.stream import registry
    from tickerpulse.stream.scoring import make_scorer

    stop = stop or threading.Event()
    own = [x is None for x in (bus, store, scorer)]
    bus = bus or registry.open_bus(cfg)
    store = store or registry.open_store(cfg)
    scorer = scorer or make_scorer(cfg.scorer, model=cfg.model, adapter=cfg.adapter, mode=cfg.mode, url=cfg.url,
                                   concurrency=cfg.concurrency, batch_size=cfg.score_batch)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    consumer = bus.consumer(cfg.group, [cfg.topic])
    health = Health()
    meta = {"pid": os.getpid(), "scorer": scorer.name, "model_version": scorer.model_version, "bus": cfg.bus,
            "store": cfg.store, "topic": cfg.topic, "group": cfg.group,
            "started_at": datetime.fromtimestamp(health.started, timezone.utc).isoformat()}
    session = getattr(store, "session", None)
    idle_since = last_beat = time.monotonic()
    log.info("processor: %s -> %s (%s), scorer %s", cfg.topic, cfg.store, cfg.group, scorer.model_version)
    try:
        store.heartbeat("processor", {**meta, "status": "running", **health.totals})
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
            res = process_records(records, scorer, cfg)
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
