"""The distillation job: raw rows -> selected, deduplicated candidates -> teacher (cached) -> chat JSONL.

Flow: `load_raw` (records) -> `plan_splits` (exact/near-duplicate handling, one queue per split) -> the
question each record asks (`Record.questions`: its first symbol, FiQA's first annotated target) -> label in waves:
the first wave is exactly the rows each split needs; rows the teacher rejects (or that disagree with gold
under `drop_disagreements`) are replaced from the same split's queue in the next wave, so a split ends
with exactly its target whenever the pool allows. Results are cached one by one as they arrive.

Stopping: with `handle_signals=True` the first SIGINT/SIGTERM stops handing out new rows, lets requests in
flight finish (and be cached) and raises `Interrupted`; rerunning the same command resumes from the cache
and sends no text twice. A second signal cancels in-flight requests. SIGKILL loses at most the
`concurrency` requests in flight (the teacher will see those texts again on the rerun).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from tickerpulse.config import ConfigError, StrictModel
from tickerpulse.data.formats import SPLITS, DataError
from tickerpulse.distill.cache import Cache, cache_key
from tickerpulse.distill.inputs import load_raw
from tickerpulse.distill.report import build_report, write_report
from tickerpulse.distill.select import Plan, plan_splits
from tickerpulse.distill.teacher import (
    GoldTeacher,
    Item,
    OpenAITeacher,
    Outcome,
    Teacher,
    TeacherError,
    check_answer,
    endpoint_host,
)
from tickerpulse.task.contract import DEFAULT_PROMPT, build_messages, format_answer, load_prompt

OPENAI_URL = "https://api.openai.com/v1"


class DistillConfig(StrictModel):
    """Everything `tickerpulse distill` needs; flags override YAML override these defaults."""

    input: str = Field(..., description="Raw rows: .jsonl/.csv file, folder with train.jsonl, or hub dataset id.")
    out: Path = Field(..., description="Output folder for train/valid/test.jsonl and the report.")
    teacher: str | None = Field(None, description="'gold' or an OpenAI-compatible base URL; default $OPENAI_BASE_URL or OpenAI.")
    teacher_model: str = Field("gpt-4o-mini", description="Model name sent to the endpoint.")
    api_key_env: str | None = Field(None, description="Env var holding the key (default TICKERPULSE_TEACHER_API_KEY, then OPENAI_API_KEY).")
    n_train: int = Field(500, ge=0)
    n_valid: int = Field(100, ge=0)
    n_test: int = Field(100, ge=0)
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    rpm: float | None = Field(None, gt=0, description="Request rate limit (token bucket), requests per minute.")
    timeout: float = Field(60.0, gt=0, description="Seconds per HTTP request before it counts as timed out.")
    max_retries: int = Field(6, ge=0, description="Retries of one request on 429/5xx/timeouts/connection errors.")
    max_invalid: int = Field(3, ge=1, description="Answers tried (with feedback) before a row is rejected.")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(256, ge=16)
    seed: int = 0
    prompt_version: str = DEFAULT_PROMPT
    drop_disagreements: bool = False
    near_dup_threshold: float = Field(0.8, gt=0, le=1, description="5-gram Jaccard for near-duplicates; 1 disables.")
    drop_near_duplicates: bool = False
    cache: Path | None = Field(None, description="SQLite cache file; default <TICKERPULSE_HOME>/distill/cache.sqlite.")
    retry_rejected: bool = False
    price_in: float | None = Field(None, ge=0, description="USD per 1M prompt tokens (known for gpt-4o-mini etc.).")
    price_out: float | None = Field(None, ge=0, description="USD per 1M completion tokens.")
    limit: int | None = Field(None, ge=1, description="Read at most this many input rows.")
    max_consecutive_failures: int = Field(50, ge=1, description="Abort when this many rows in a row get no valid answer.")

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        if self.n_train + self.n_valid + self.n_test == 0:
            raise ValueError("--n-train, --n-valid and --n-test are all 0: nothing to distill")
        if (self.price_in is None) != (self.price_out is None):
            raise ValueError("give both --price-in and --price-out (USD per 1M tokens) or neither")
        return self

    @property
    def targets(self) -> dict[str, int]:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}


class Progress(Protocol):
    """What the job reports while it runs (the CLI draws a rich progress bar from it)."""

    def add(self, n: int) -> None: ...

    def advance(self, outcome: Outcome, cached: bool) -> None: ...


class Interrupted(Exception):
    """The job was stopped by a signal; everything answered so far is in the cache."""


def teacher_url(teacher: str | None) -> str:
    """The base URL: the flag, else $OPENAI_BASE_URL, else OpenAI; a bare host gets `/v1` appended."""
    url = (teacher or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--teacher {teacher!r}: expected 'gold' or an http(s) URL such as http://127.0.0.1:8080/v1")
    if parts.username or parts.password:
        raise ConfigError("--teacher: put credentials in TICKERPULSE_TEACHER_API_KEY / OPENAI_API_KEY, not in the URL")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


def make_teacher(cfg: DistillConfig, stop: asyncio.Event | None = None) -> Teacher:
    """Build the teacher named by the config (reads the API key from the environment)."""
    if cfg.teacher == "gold":
        return GoldTeacher()
    url = teacher_url(cfg.teacher)
    names = [cfg.api_key_env] if cfg.api_key_env else ["TICKERPULSE_TEACHER_API_KEY", "OPENAI_API_KEY"]
    key = next((os.environ[n] for n in names if os.environ.get(n)), None)
    if key is None:
        if (urlsplit(url).hostname or "").endswith("openai.com"):
            raise ConfigError(f"teacher {url} needs an API key: set {' or '.join(names)}")
        key = "no-key"  # local servers (ours, vLLM, Ollama, llama.cpp) accept any key
    return OpenAITeacher(
        url, cfg.teacher_model, key, prompt_version=cfg.prompt_version, response_format=cfg.response_format,
        temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed, timeout=cfg.timeout,
        max_retries=cfg.max_retries, max_invalid=cfg.max_invalid, rpm=cfg.rpm, stop=stop,
    )


def default_cache_path() -> Path:
    from tickerpulse.paths import home

    return home() / "distill" / "cache.sqlite"


def run_distill(
    cfg: DistillConfig,
    *,
    teacher: Teacher | None = None,
    progress: Progress | None = None,
    handle_signals: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Run the whole job and write `cfg.out`; returns the report dict (also written as report.json/md).

    Raises:
        Interrupted: stopped by SIGINT/SIGTERM (only with `handle_signals`); rerun to resume.
        TeacherError: the endpoint refused the key or does not know the model.
        DataError / FileNotFoundError: unreadable input.
    """
    started = time.time()
    load_prompt(cfg.prompt_version)  # unknown version / missing key / bad URL: fail before reading anything
    stop = asyncio.Event()
    teacher = teacher or make_teacher(cfg, stop)
    rows = load_raw(cfg.input, cfg.limit)
    if not rows:
        raise DataError(cfg.input, 0, "no rows to label (the input is empty)")
    if teacher.endpoint == "gold" and not any(r.label for r in rows):
        raise DataError(cfg.input, 0, "--teacher gold needs gold labels, and the input has none (no label/score column)")
    plan = plan_splits(rows, cfg.targets, cfg.seed, cfg.near_dup_threshold, cfg.drop_near_duplicates)
    _check_pool(cfg, plan)
    job = _Job(cfg, plan, progress, stop)
    asyncio.run(job.run(teacher, handle_signals))
    written = job.write_outputs()
    report = build_report(job, written, time.time() - started, command)
    write_report(report, cfg.out)
    empty = [s for s in written if not written[s]]
    if empty:  # no such file was written: an empty split is a folder `data validate` rejects
        c = report["counts"]
        raise DataError(cfg.input, 0, f"no usable row for {' and '.join(empty)} ({c['rejected']} rejected, "
                        f"{c['failed']} failed, {c['dropped_disagreements']} dropped as disagreements; "
                        f"details in {cfg.out}/report.md and rejects.jsonl): add rows or set "
                        + " / ".join(f"--n-{s} 0" for s in empty))
    return report


def _check_pool(cfg: DistillConfig, plan: Plan) -> None:
    """Fail before any request when the input cannot give every wanted split a row.

    Whole (near-)duplicate groups go to one split, so the pool needs at least one distinct group per split.
    """
    wanted = [s for s in SPLITS if cfg.targets[s] > 0]
    empty = [s for s in wanted if not plan.queues[s]]
    if not empty:
        return
    st = plan.stats
    groups = len({plan.cluster[i] for q in plan.queues.values() for i in q})
    raise DataError(
        cfg.input, 0,
        f"too few rows: {st['input_rows']} read, {st['candidates']} usable after dropping "
        f"{st['exact_duplicates_dropped']} duplicates and {st['empty_dropped']} empty texts, in {groups} groups of "
        f"(near-)identical text; {'/'.join(wanted)} need at least {len(wanted)} groups (one per split): add rows or "
        + " or ".join(f"set --n-{s} 0" for s in empty)
        + (", or --near-dup-threshold 1 to stop grouping near-duplicates" if st.get("near_duplicate_clusters") else ""),
    )


class _Job:
    def __init__(self, cfg: DistillConfig, plan: Plan, progress: Progress | None, stop: asyncio.Event):
        self.cfg, self.plan, self.progress = cfg, plan, progress
        self.prompt = load_prompt(cfg.prompt_version)
        self.items: dict[int, Item] = {}
        self.split_of: dict[int, str] = {s_idx: s for s in SPLITS for s_idx in plan.queues[s]}
        self.cursor: Counter[str] = Counter()
        self.results: dict[int, Outcome] = {}
        self.cached: set[int] = set()
        self.stop = stop
        self.teacher: Teacher | None = None
        self.cache_path: Path | None = None
        self.format_fallbacks: list[str] = []
        self._consecutive_failures = 0
        self.label_seconds = 0.0

    def item(self, idx: int) -> Item:
        if idx not in self.items:
            q = self.plan.rows[idx].questions()[0]  # the one question rule (FiQA: that target's own gold)
            self.items[idx] = Item(q.id, q.text, q.target, list(q.tickers), q.label, q.score, q.source)
        return self.items[idx]

    async def run(self, teacher: Teacher, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()

        hard_stop = []

        def on_signal() -> None:
            if self.stop.is_set() and main is not None:
                hard_stop.append(True)
                main.cancel()  # second signal: stop waiting for requests in flight
            self.stop.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        self.teacher = teacher
        if getattr(teacher, "stop", "absent") is None:  # a teacher built by the caller: let it see Ctrl-C too
            teacher.stop = self.stop  # type: ignore[attr-defined]
        cache = None
        if self.teacher.cacheable:
            self.cache_path = Path(self.cfg.cache).expanduser() if self.cfg.cache else default_cache_path()
            cache = Cache(self.cache_path)
        t0 = time.perf_counter()
        try:
            await self._waves(cache)
        except asyncio.CancelledError:
            if not hard_stop:  # cancelled by whoever runs us, not by our second signal: let it through
                raise
            raise Interrupted("interrupted twice: requests in flight were abandoned") from None
        finally:
            self.label_seconds = time.perf_counter() - t0
            self.format_fallbacks = list(getattr(self.teacher, "format_fallbacks", []))
            await self.teacher.aclose()
            if cache is not None:
                cache.close()
            for sig in signals:
                loop.remove_signal_handler(sig)
        if self.stop.is_set():
            done = sum(1 for o in self.results.values() if o.status != "failed")
            raise Interrupted(f"stopped after {done} rows ({len(self.cached)} from the cache); rerun the same command to resume")

    def _key(self, idx: int) -> str:
        it = self.item(idx)
        return cache_key(self.teacher.endpoint, self.teacher.model, self.prompt["hash"], it.text, it.target)  # type: ignore[union-attr]

    async def _waves(self, cache: Cache | None) -> None:
        while not self.stop.is_set():
            wave: list[int] = []
            for split in SPLITS:
                need = self.cfg.targets[split] - len(self.accepted(split))
                queue = self.plan.queues[split]
                take = queue[self.cursor[split] : self.cursor[split] + max(0, need)]
                self.cursor[split] += len(take)
                wave += take
            if not wave:
                return
            if self.progress:
                self.progress.add(len(wave))
            keys = {idx: self._key(idx) for idx in wave} if cache else {}
            hits = cache.get_many(list(keys.values())) if cache else {}
            todo = []
            for idx in wave:
                hit = hits.get(keys.get(idx, ""))
                if hit is not None and not (hit.status == "rejected" and self.cfg.retry_rejected):
                    self.results[idx] = hit
                    self.cached.add(idx)
                    if self.progress:
                        self.progress.advance(hit, True)
                else:
                    todo.append(idx)
            await self._pool(todo, cache, keys)

    async def _pool(self, todo: list[int], cache: Cache | None, keys: dict[int, str]) -> None:
        pending = iter(todo)

        async def worker() -> None:
            for idx in pending:  # a shared iterator: each index goes to exactly one worker
                if self.stop.is_set():
                    return
                it = self.item(idx)
                out = await self.teacher.label(it)  # type: ignore[union-attr]
                if out.status == "failed" and self.stop.is_set():
                    return  # interrupted before an answer: not a result, the rerun asks again
                self.results[idx] = out
                if cache is not None:
                    cache.put(keys[idx], self.teacher.endpoint, self.teacher.model, self.prompt["hash"], it.text, it.target, out)  # type: ignore[union-attr]
                if self.progress:
                    self.progress.advance(out, False)
                self._consecutive_failures = self._consecutive_failures + 1 if out.status != "ok" else 0
                if self._consecutive_failures >= self.cfg.max_consecutive_failures:
                    raise TeacherError(
                        f"teacher {endpoint_host(self.teacher.endpoint)} gave no valid answer for "  # type: ignore[union-attr]
                        f"{self._consecutive_failures} rows in a row (last: {out.status}, {out.reason}); "
                        "answers so far are cached: fix the endpoint/model/prompt and rerun"
                    )

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, len(todo)))]
        if not tasks:
            return
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def verdict(self, idx: int) -> str:
        """'ok', 'rejected', 'failed', 'disagrees' (dropped by --drop-disagreements) or 'pending'."""
        out = self.results.get(idx)
        if out is None:
            return "pending"
        if out.status != "ok":
            return out.status
        it = self.item(idx)
        if self.cfg.drop_disagreements and it.gold_label and out.answer and out.answer["sentiment"] != it.gold_label:
            return "disagrees"
        return "ok"

    def accepted(self, split: str) -> list[int]:
        queue = self.plan.queues[split][: self.cursor[split]]
        return [idx for idx in queue if self.verdict(idx) == "ok"][: self.cfg.targets[split]]

    def row(self, idx: int) -> dict[str, Any]:
        """The chat row for an accepted index; re-validates so nothing invalid can be written."""
        it, out = self.item(idx), self.results[idx]
        ans = out.answer or {}
        try:
            content = format_answer(it.target, ans.get("sentiment", ""), ans.get("score", 99), ans.get("reasoning", ""),
                                    self.cfg.prompt_version)
            checked, reason = check_answer(content, it.target, it.tickers)
        except ValueError as exc:
            checked, reason = None, str(exc)
        if checked is None:  # only reachable through a hand-edited cache: never write it
            raise TeacherError(f"cached answer for row {it.id} is invalid ({reason}); delete it from {self.cache_path}")
        host = endpoint_host(self.teacher.endpoint)  # type: ignore[union-attr]
        # the keys shared with `data convert` rows (id, record_id, source, text, ticker, label, score, reasoning,
        # prompt_*) mean the same there, so `data split`/`data stats` read distilled rows too
        meta = {
            "id": it.id,
            "record_id": it.id,
            "source": self.plan.rows[idx].source,
            "text": it.text,
            "target": checked.target,
            "ticker": checked.ticker,
            "label": checked.sentiment,
            "score": round(checked.score, 2),
            "reasoning": out.reasoning_source,
            "prompt_version": self.prompt["version"],
            "prompt_hash": self.prompt["hash"],
            "teacher": self.teacher.model,  # type: ignore[union-attr]
            "endpoint": host,
            "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(out.labelled_at)),
            "gold_label": it.gold_label,
            "agreement": None if it.gold_label is None else checked.sentiment == it.gold_label,
            "response_format": out.response_format,
            "attempts": out.attempts,
        }
        messages = build_messages(it.text, it.target, self.cfg.prompt_version)
        return {"messages": [*messages, {"role": "assistant", "content": content}], "meta": meta}

    def write_outputs(self) -> dict[str, list[int]]:
        """Write train/valid/test.jsonl (atomically) and rejects.jsonl; returns the indices written per split."""
        out_dir = Path(self.cfg.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[int]] = {}
        for split in SPLITS:
            path = out_dir / f"{split}.jsonl"
            if self.cfg.targets[split] == 0:
                path.unlink(missing_ok=True)  # a stale split from an earlier run would mislead `train`
                continue
            written[split] = self.accepted(split)
            if not written[split]:
                path.unlink(missing_ok=True)  # never an empty split (run_distill raises after the report)
                continue
            _write_jsonl(path, (self.row(idx) for idx in written[split]))
        bad = [idx for split in SPLITS for idx in self.plan.queues[split][: self.cursor[split]]
               if self.verdict(idx) in ("rejected", "failed", "disagrees")]
        _write_jsonl(out_dir / "rejects.jsonl", (self._reject_row(idx) for idx in bad))
        return written

    def _reject_row(self, idx: int) -> dict[str, Any]:
        it, out = self.item(idx), self.results[idx]
        reason = out.reason if out.status != "ok" else f"teacher said {out.answer['sentiment']}, gold is {it.gold_label}"  # type: ignore[index]
        return {"id": it.id, "split": self.split_of[idx], "verdict": self.verdict(idx), "reason": reason,
                "attempts": out.attempts, "target": it.target, "text": it.text}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
