"""Dynamic batching: concurrent requests wait in a bounded asyncio queue; one worker takes what arrived within
a few milliseconds (up to `max_batch_size` rows), groups it by (kind, adapter, mode) and runs each group as
one batch on the single model thread.

A full queue refuses new work at once (`QueueFull` -> HTTP 429) so an overloaded server stays responsive.
Each job has a deadline: expired jobs are dropped before they reach the model, and generation rows check it
between tokens (`RequestTimeout` -> HTTP 504).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.serve.decoding import GenRequest, decode
from tickerpulse.serve.metrics import Metrics


class QueueFull(RuntimeError):
    """The request queue is at its limit (HTTP 429)."""


class RequestTimeout(TimeoutError):
    """The request did not finish within its timeout (HTTP 504)."""


@dataclass
class Job:
    """One request's work. `key` groups jobs that can share a batch."""

    key: tuple
    payload: Any  # sentiment: list[(text, ticker)]; generate: list[GenRequest]
    deadline: float
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return max(1, len(self.payload))

    def expired(self) -> bool:
        return self.cancel.is_set() or time.monotonic() > self.deadline


class Batcher:
    """Queue + worker in front of a SentimentEngine (whose Runtime also serves the OpenAI routes).

    Args:
        engine: the SentimentEngine (its `rt` is the shared Runtime).
        metrics: where queue depth and batch sizes go.
        max_batch_size: most rows (texts or generated outputs) per model batch.
        max_queue: most requests waiting; one more gets QueueFull.
        window_ms: how long the worker waits for more requests after the first one.
        timeout: default seconds a request may take end to end.
    """

    def __init__(self, engine: Any, metrics: Metrics, max_batch_size: int = 32, max_queue: int = 256,
                 window_ms: float = 3.0, timeout: float = 60.0) -> None:
        self.engine, self.metrics = engine, metrics
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.window, self.timeout = window_ms / 1000.0, timeout
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tp-model")
        self.busy = False

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def enqueue(self, key: tuple, payload: Any, timeout: float | None = None) -> Job:
        """Queue a job now (raises QueueFull); await `wait(job)` for its result."""
        assert self._queue is not None, "Batcher.start() was not awaited"
        if self._queue.qsize() >= self.max_queue:
            self.metrics.rejected += 1
            raise QueueFull(f"server busy: {self._queue.qsize()} requests queued (limit {self.max_queue}); retry later")
        job = Job(key, payload, time.monotonic() + (timeout or self.timeout))
        job.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(job)
        self.metrics.queue_depth = self._queue.qsize()
        return job

    async def wait(self, job: Job) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), max(0.0, job.deadline - time.monotonic()) + 0.5)
        except asyncio.TimeoutError:
            job.cancel.set()
            raise RequestTimeout(f"request timed out after {self.timeout:.0f}s") from None
        except asyncio.CancelledError:
            job.cancel.set()  # the client went away: do not spend the model on it
            raise

    async def submit(self, key: tuple, payload: Any, timeout: float | None = None) -> Any:
        return await self.wait(self.enqueue(key, payload, timeout))

    # -------------------------------------------------------------------------------------------- worker

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            rows = first.rows
            end = loop.time() + self.window
            while rows < self.max_batch_size:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = end - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                batch.append(job)
                rows += job.rows
            self.metrics.queue_depth = self._queue.qsize()
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if job.expired():
                    if not job.future.done():
                        job.future.set_exception(RequestTimeout("request timed out while queued"))
                    continue
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                self.busy = True
                try:
                    results = await loop.run_in_executor(self._pool, self._run_group, key, jobs)
                except Exception as exc:  # a model error fails this group's requests, never the worker
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                finally:
                    self.busy = False
                for job, res in zip(jobs, results):
                    if not job.future.done():
                        job.future.set_result(res)

    def _run_group(self, key: tuple, jobs: Sequence[Job]) -> list[Any]:
        """Runs on the model thread: one batch for all jobs of a group; returns one result per job."""
        kind, adapter = key[0], key[1]
        if kind == "sentiment":
            mode, max_tokens = key[2], key[3]
            items = [it for job in jobs for it in job.payload]
            self.metrics.batch(f"sentiment_{mode}", len(items))
            answers = self.engine.analyze(items, mode=mode, max_tokens=max_tokens, adapter_name=adapter)
            self.metrics.texts(mode, len(items))
            out, i = [], 0
            for job in jobs:
                out.append(answers[i : i + len(job.payload)])
                i += len(job.payload)
            return out
        reqs: list[GenRequest] = [r for job in jobs for r in job.payload]
        for job in jobs:
            for r in job.payload:
                r.cancelled = job.expired
        self.metrics.batch("generate", len(reqs))
        rt = self.engine.rt
        prefix = self.engine.prefix_ids
        hit = [len(r.prompt_ids) > len(prefix) and r.prompt_ids[: len(prefix)] == prefix for r in reqs]
        with_prefix = [r for r, h in zip(reqs, hit) if h]
        without = [r for r, h in zip(reqs, hit) if not h]
        with rt.use(adapter):
            for group, pre in ((with_prefix, prefix), (without, None)):
                for i in range(0, len(group), self.max_batch_size):
                    decode(rt, group[i : i + self.max_batch_size], adapter, pre)
        self.metrics.tokens(sum(r.generated for r in reqs), sum(r.prompt_tokens for r in reqs))
        return [list(job.payload) for job in jobs]
