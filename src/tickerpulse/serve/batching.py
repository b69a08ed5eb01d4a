"""Dynamic batching: concurrent requests wait in a bounded asyncio queue; one worker takes what arrived within
a few milliseconds (up to `max_batch_size` rows), groups it by (kind, adapter, mode) and runs each group as
one batch on the single model thread.

Overload and failure stay local to the request that causes them:

- The queue is bounded in requests and in work items (sentiment (text, ticker) pairs + generated outputs):
  beyond either, a new request is refused at once (`QueueFull` -> HTTP 429) so the server stays responsive.
- Each job has a deadline; a client that hangs up (`wait(..., disconnected=)`) or times out sets its cancel
  flag. Expired jobs are dropped before they reach the model, generation rows check the flag between tokens,
  and a batch whose jobs are all gone is abandoned between decoder layers (`Runtime.stop_when`), so the model
  is free right after a 504.
- A generation row whose own settings or constraint raise leaves its batch alone (`GenRequest.error`) and
  fails only its job. If a whole batch raises, its jobs are run again one by one (generation rows reset
  first) so only the culprit fails. Either way the culprit gets `JobRejected` (HTTP 400) for an input error,
  its own error (HTTP 500) for anything else.
- The model thread is a daemon: a job that cannot be interrupted never keeps the process alive at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.serve.decoding import GenRequest, decode
from tickerpulse.serve.grammar import UnsupportedSchema
from tickerpulse.serve.metrics import Metrics
from tickerpulse.serve.runtime import Interrupted

log = logging.getLogger("tickerpulse.serve")

# Errors that a request's own content raises inside the model call (a seed numpy refuses, NaN probabilities):
# run alone, such a job gets a 400 rather than a 500.
INPUT_ERRORS = (ValueError, TypeError, OverflowError, UnicodeError, RecursionError, ArithmeticError)


class QueueFull(RuntimeError):
    """The request queue is at its limit (HTTP 429)."""


class RequestTimeout(TimeoutError):
    """The request did not finish within its timeout (HTTP 504)."""


class JobRejected(ValueError):
    """The model call failed on this request's input, run alone (HTTP 400)."""


class TooMuchWork(ValueError):
    """One request holds more work items than the whole queue may (HTTP 400)."""


class ClientGone(Exception):
    """The client hung up before its answer; its work is cancelled (nobody reads the response: logged as 499)."""


class ShuttingDown(RuntimeError):
    """The server stops; queued and running work is abandoned (HTTP 503)."""


@dataclass
class Job:
    """One request's work. `key` groups jobs that can share a batch.

    `reset` (generation jobs) restores the rows to their unstarted state so the job can run again alone after
    its batch failed; `streamed` says text already reached the client, which makes a rerun impossible.
    """

    key: tuple
    payload: Any  # sentiment: list[(text, ticker)]; generate: list[GenRequest]
    deadline: float
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]
    cancel: threading.Event = field(default_factory=threading.Event)
    reset: Callable[[], None] | None = field(repr=False, default=None)
    streamed: bool = False

    @property
    def rows(self) -> int:
        return max(1, len(self.payload))

    def expired(self) -> bool:
        return self.cancel.is_set() or time.monotonic() > self.deadline


@dataclass(frozen=True)
class _Outcome:
    """One job's share of a group run: its result, or the error of the one row that failed alone
    (`GenRequest.error`) while the rest of the group went on."""

    value: Any = None
    error: Exception | None = None


class _ModelThread:
    """One daemon thread that runs model calls in order (a ThreadPoolExecutor's worker would be joined at
    interpreter exit, so a call that never returns would keep a SIGTERMed server alive)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tp-model", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        self._calls.put((fut, fn, args))
        return fut

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            fut, fn, args = call
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                fut.set_exception(exc)

    def stop(self, wait: float = 0.0) -> bool:
        """Ask the thread to end after its current call; True if it ended within `wait` seconds."""
        self._calls.put(None)
        self._thread.join(wait)
        return not self._thread.is_alive()


def _retrieved(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class Batcher:
    """Queue + worker in front of a SentimentEngine (whose Runtime also serves the OpenAI routes).

    Args:
        engine: the SentimentEngine (its `rt` is the shared Runtime).
        metrics: where queue depth and batch sizes go.
        max_batch_size: most rows (texts or generated outputs) per model batch.
        max_queue: most requests waiting; one more gets QueueFull.
        window_ms: how long the worker waits for more requests after the first one.
        timeout: default seconds a request may take end to end.
        max_queue_items: most work items waiting (sentiment pairs + generated outputs); more get QueueFull.
    """

    def __init__(self, engine: Any, metrics: Metrics, max_batch_size: int = 32, max_queue: int = 256,
                 window_ms: float = 3.0, timeout: float = 60.0, max_queue_items: int = 4096) -> None:
        self.engine, self.metrics = engine, metrics
        self.max_batch_size, self.max_queue, self.max_queue_items = max_batch_size, max_queue, max_queue_items
        self.window, self.timeout = window_ms / 1000.0, timeout
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._model: _ModelThread | None = None
        self._items = 0  # work items in the queue
        self._taken: list[Job] = []  # the batch the worker is on (settled or not)
        self._stopped = False
        self.busy = False

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._model = _ModelThread()
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self, wait: float = 2.0) -> bool:
        """Cancel queued and running work and stop the model thread; True if it stopped within `wait` s."""
        if self._stopped:
            return True
        self._stopped = True
        pending = list(self._taken)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            job.cancel.set()
            if job.future is not None and not job.future.done():
                job.future.set_exception(ShuttingDown("server shutting down"))
        if self._model is None:
            return True
        stopped = await asyncio.get_running_loop().run_in_executor(None, self._model.stop, wait)
        if not stopped:
            log.warning("the model thread is still busy after %.0fs; abandoning it (daemon thread)", wait)
        return stopped

    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def queued_items(self) -> int:
        return self._items

    def enqueue(self, key: tuple, payload: Any, timeout: float | None = None,
                reset: Callable[[], None] | None = None) -> Job:
        """Queue a job now (raises QueueFull / TooMuchWork); await `wait(job)` for its result."""
        assert self._queue is not None, "Batcher.start() was not awaited"
        if self._stopped:
            raise ShuttingDown("server shutting down")
        job = Job(key, payload, time.monotonic() + (timeout or self.timeout), reset=reset)
        if job.rows > self.max_queue_items:
            raise TooMuchWork(f"this request holds {job.rows} work items; this server takes at most "
                              f"{self.max_queue_items} at a time")
        if self._queue.qsize() >= self.max_queue or self._items + job.rows > self.max_queue_items:
            self.metrics.rejected += 1
            raise QueueFull(f"server busy: {self._queue.qsize()} requests / {self._items} work items queued (limits "
                            f"{self.max_queue} / {self.max_queue_items}); retry later")
        job.future = asyncio.get_running_loop().create_future()
        job.future.add_done_callback(_retrieved)  # a result set after a 504 is nobody's: no asyncio warning
        self._queue.put_nowait(job)
        self._items += job.rows
        self.metrics.queue_depth = self._queue.qsize()
        return job

    async def wait(self, job: Job, disconnected: Callable[[], Awaitable[bool]] | None = None,
                   poll: float = 0.25) -> Any:
        """The job's result. Raises RequestTimeout after its deadline; with `disconnected`, polls it every
        `poll` seconds and cancels the job (and raises ClientGone) once the client has gone."""
        try:
            while True:
                left = job.deadline - time.monotonic() + 0.5
                if left <= 0:
                    job.cancel.set()
                    raise RequestTimeout(f"request timed out after {self.timeout:.0f}s")
                done, _ = await asyncio.wait({job.future}, timeout=min(left, poll) if disconnected else left)
                if done:
                    return job.future.result()
                if disconnected is not None and await disconnected():
                    job.cancel.set()
                    raise ClientGone("client disconnected")
        except asyncio.CancelledError:
            job.cancel.set()  # the client went away: do not spend the model on it
            raise

    async def submit(self, key: tuple, payload: Any, timeout: float | None = None,
                     disconnected: Callable[[], Awaitable[bool]] | None = None,
                     reset: Callable[[], None] | None = None) -> Any:
        return await self.wait(self.enqueue(key, payload, timeout, reset), disconnected)

    # -------------------------------------------------------------------------------------------- worker

    async def _take(self) -> Job:
        assert self._queue is not None
        job = await self._queue.get() if self._queue.empty() else self._queue.get_nowait()
        self._items -= job.rows
        return job

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._take()
            batch = [first]
            rows = first.rows
            end = loop.time() + self.window
            while rows < self.max_batch_size:
                if self._queue.empty():
                    left = end - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._take(), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    job = await self._take()
                batch.append(job)
                rows += job.rows
            self.metrics.queue_depth = self._queue.qsize()
            self._taken = batch
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if job.expired():
                    if not job.future.done():
                        job.future.set_exception(RequestTimeout("request timed out while queued"))
                    continue
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                await self._run(key, jobs, isolate=len(jobs) > 1)

    async def _run(self, key: tuple, jobs: list[Job], isolate: bool, rerun: bool = False) -> None:
        """Run one group on the model thread and settle its futures; on failure rerun the jobs one by one."""
        assert self._model is not None
        self.busy = True
        try:
            results = await asyncio.wrap_future(self._model.submit(self._run_group, key, jobs, rerun))
        except Interrupted:  # every job of the group had expired or was cancelled
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(RequestTimeout("request timed out while running"))
            return
        except Exception as exc:
            if isolate:
                log.warning("a batch of %d requests failed (%s: %s); running them one by one", len(jobs),
                            type(exc).__name__, exc)
                for job in jobs:
                    if job.streamed or job.expired():
                        self._fail(job, exc)
                        continue
                    await self._run(key, [job], isolate=False, rerun=True)
                return
            for job in jobs:
                self._fail(job, exc)
            return
        finally:
            self.busy = False
        for job, res in zip(jobs, results):
            if res.error is not None:
                self._fail(job, res.error)
            elif not job.future.done():
                job.future.set_result(res.value)

    def _fail(self, job: Job, exc: Exception) -> None:
        if job.future.done():
            return
        if isinstance(exc, UnsupportedSchema):  # the grammar could not go on: the schema's fault (HTTP 400)
            job.future.set_exception(JobRejected(str(exc)[:300]))
        elif isinstance(exc, INPUT_ERRORS) and type(exc).__module__ == "builtins":
            job.future.set_exception(JobRejected(f"the model could not process this request: "
                                                 f"{type(exc).__name__}: {str(exc)[:200]}"))
        else:
            log.error("model call failed: %s: %s", type(exc).__name__, exc)
            job.future.set_exception(exc)

    def _run_group(self, key: tuple, jobs: Sequence[Job], rerun: bool = False) -> list[_Outcome]:
        """Runs on the model thread: one batch for all jobs of a group; returns one outcome per job."""
        rt = self.engine.rt
        if rerun:  # rebuilding constraints compiles grammars: model-thread work, not event-loop work
            for job in jobs:
                if job.reset is not None:
                    job.reset()
        with rt.stop_when(lambda: all(job.expired() for job in jobs)):
            return self._run_group_body(key, jobs)

    def _run_group_body(self, key: tuple, jobs: Sequence[Job]) -> list[_Outcome]:
        kind, adapter = key[0], key[1]
        if kind == "sentiment":
            mode, max_tokens = key[2], key[3]
            items = [it for job in jobs for it in job.payload]
            self.metrics.batch(f"sentiment_{mode}", len(items))
            answers = self.engine.analyze(items, mode=mode, max_tokens=max_tokens, adapter_name=adapter)
            self.metrics.texts(mode, len(items))
            out, i = [], 0
            for job in jobs:
                out.append(_Outcome(answers[i : i + len(job.payload)]))
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
        return [_Outcome(list(job.payload), next((r.error for r in job.payload if r.error is not None), None))
                for job in jobs]
