"""The per-record work of the Spark processor, as functions Spark ships to its Python workers.

    Kafka rows --parse_posts (mapInPandas)--> item / mark / dead rows
               --score_udf (pandas UDF on item rows)--> + answer struct
               --write_partition (per partition, inside foreachBatch)--> store + dead-letter topic

The semantics are the local processor's (`tickerpulse.stream.processor`), reusing its pieces: the same
post parsing and limits, ticker extraction, retries with backoff then per-item isolation
(`score_with_retry`), document ids, post marks and dead letters. Only the plumbing differs.

Each worker process builds its scorer, store and bus once and keeps them (Spark reuses Python workers),
keyed by the settings they were built from. Functions here take the `StreamConfig` as a plain dict so
they pickle small.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.schema import (DeadLetter, Post, PostError, PostMark, SentimentDoc, clamp_event_time,
                                       parse_post, safe_utc, utcnow)

# Rows between the parse stage and the writer (a DDL string: what mapInPandas and the UDF declare).
PARSED_DDL = ("kind string, topic string, partition int, offset long, ingested_at double, post_id string, "
              "ticker string, asset_class string, text string, data string")
ANSWER_DDL = "sentiment string, score double, reasoning string, latency_ms double, attempts int, error string"
PARSED_COLS = [c.split()[0] for c in PARSED_DDL.split(", ")]

_CACHE: dict[str, Any] = {}


def _cached(kind: str, key: str, build: Any) -> Any:
    k = f"{kind}\x1f{key}"
    if k not in _CACHE:
        _CACHE[k] = build()
    return _CACHE[k]


def _cfg(cfg: dict[str, Any]) -> StreamConfig:
    return _cached("cfg", json.dumps(cfg, sort_keys=True, default=str), lambda: StreamConfig.model_validate(cfg))


# A micro-batch whose scorer stays unavailable this long fails (Spark then retries it from the checkpoint)
# instead of dead-lettering good posts; a refusal (401/403) fails it at once. `processor_options.max_pause_s`.
MAX_PAUSE_S = 60.0


def scorer_for(cfg: StreamConfig) -> Any:
    """This worker's scorer for `cfg` (built once per process)."""
    from tickerpulse.stream.scoring import scorer_from_config

    key = json.dumps([cfg.scorer, cfg.model, cfg.adapter, cfg.mode, cfg.url, cfg.concurrency, cfg.score_batch,
                      cfg.api_key_env, cfg.scorer_timeout])
    return _cached("scorer", key, lambda: scorer_from_config(cfg))


def model_version(cfg: StreamConfig, stop: Any = None) -> str:
    """The model version the workers' scorer will report (it goes into document ids), found without
    loading the model: the engine's is a function of model/adapter/mode and the model folder's prompt version,
    the http scorer asks the server which model it serves (waiting while it is unreachable; ScorerFatal on a
    refusal)."""
    from tickerpulse.stream import scoring

    if cfg.scorer == "engine":
        from tickerpulse.serve.engine import served_prompt_version

        return scoring.model_version(cfg.model, cfg.adapter, cfg.mode, served_prompt_version(cfg.model))
    scorer = scoring.scorer_from_config(cfg, concurrency=1)
    try:
        ready = getattr(scorer, "ready", None)
        if callable(ready):
            return ready(stop=stop, backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s)
        return scorer.model_version
    finally:
        scorer.close()


# -- stage 1: parse + tickers --------------------------------------------------------------------------

def parse_posts(cfg: dict[str, Any]):  # -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]
    """mapInPandas function: Kafka rows -> one `mark` row per valid post, one `item` row per (post, ticker)
    to score, one `dead` row per record that is not a valid post. Duplicate post ids within a partition's
    batch are judged once (Kafka keys are post ids, so duplicates share a partition)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from tickerpulse.stream.processor import post_tickers
        from tickerpulse.task.tickers import asset_class

        c = _cfg(cfg)
        seen: set[str] = set()
        for df in batches:
            rows: list[tuple] = []
            now = utcnow()
            for value, topic, part, off, ts in zip(df["value"], df["topic"], df["partition"], df["offset"], df["timestamp"]):
                ingested = pd.Timestamp(ts).timestamp() if ts is not None and not pd.isna(ts) else time.time()
                where = (topic, int(part), int(off), float(ingested))
                try:
                    post = parse_post(value, max_bytes=c.max_post_bytes)
                    post = post.model_copy(update={"created_at": clamp_event_time(  # as the local processor
                        post.created_at, safe_utc(ingested), c.max_future_s)})
                except PostError as exc:
                    dl = DeadLetter.build(value, stage="parse", code=exc.code, reason=exc.reason,
                                          topic=topic, partition=int(part), offset=int(off),
                                          max_payload_bytes=c.max_post_bytes)
                    rows.append(("dead", *where, None, None, None, None, json.dumps(dl.to_dict())))
                    continue
                if post.id in seen:
                    continue
                seen.add(post.id)
                tickers = post_tickers(post.text, c.max_tickers_per_post, names=c.names)
                mark = PostMark(post_id=post.id, source=post.source, created_at=post.created_at, ingested_at=ingested,
                                processed_at=now, n_tickers=len(tickers), tickers=tickers)
                rows.append(("mark", *where, post.id, None, None, None, json.dumps(mark.to_dict())))
                pj = post.model_dump_json()
                rows += [("item", *where, post.id, t, asset_class(t), post.text, pj) for t in tickers]
            yield pd.DataFrame.from_records(rows, columns=PARSED_COLS)

    return run


# -- stage 2: the model ----------------------------------------------------------------------------------

def score_series(cfg: dict[str, Any], text: pd.Series, ticker: pd.Series) -> pd.DataFrame:
    """Body of the pandas UDF: judge the (text, ticker) pairs of one Arrow batch; rows without a ticker
    (marks, dead letters) get nulls. Calls go in groups of `score_batch * concurrency` items (so the http
    scorer keeps `concurrency` requests in flight), each with retries, backoff and per-item isolation.
    A scorer fault (ScorerFatal, or ScorerUnavailable for more than max_pause_s) raises: the micro-batch
    fails and is retried from the checkpoint, so good posts are never dead-lettered for it."""
    from tickerpulse.stream.processor import score_with_retry

    c = _cfg(cfg)
    n = len(text)
    out: dict[str, list[Any]] = {k: [None] * n for k in ("sentiment", "score", "reasoning", "latency_ms", "attempts", "error")}
    idx = [i for i in range(n) if isinstance(ticker.iat[i], str) and ticker.iat[i]]
    if idx:
        scorer = scorer_for(c)
        group = c.score_batch * (c.concurrency if c.scorer == "http" else 1)
        for g in range(0, len(idx), group):
            rows = idx[g : g + group]
            t0 = time.perf_counter()
            answers, failures, _ = score_with_retry(scorer, [(text.iat[i], ticker.iat[i]) for i in rows],
                                                    max_attempts=c.max_attempts, backoff_s=c.backoff_s,
                                                    max_backoff_s=c.max_backoff_s,
                                                    max_pause_s=float(c.processor_options.get("max_pause_s", MAX_PAUSE_S)))
            ms = (time.perf_counter() - t0) * 1000
            failed = {j: (attempts, reason) for j, attempts, reason in failures}
            for j, (i, ans) in enumerate(zip(rows, answers)):
                out["latency_ms"][i] = ms
                if ans is None:
                    out["attempts"][i], out["error"][i] = failed.get(j, (c.max_attempts, "no answer"))
                    continue
                out["sentiment"][i], out["score"][i] = ans["sentiment"], float(ans["score"])
                out["reasoning"][i], out["attempts"][i] = str(ans.get("reasoning") or ""), 1
    return pd.DataFrame(out)


# -- stage 3: the sink ----------------------------------------------------------------------------------

def store_for(cfg: StreamConfig) -> Any:
    from tickerpulse.stream import registry

    key = json.dumps([cfg.store, cfg.es_url, cfg.es_index, str(cfg.db), cfg.store_options], sort_keys=True, default=str)
    return _cached("store", key, lambda: registry.open_store(cfg))


def bus_for(cfg: StreamConfig) -> Any:
    from tickerpulse.stream import registry

    key = json.dumps([cfg.bus, cfg.kafka_bootstrap, str(cfg.bus_path), cfg.bus_options], sort_keys=True, default=str)
    return _cached("bus", key, lambda: registry.open_bus(cfg))


def build_outputs(rows: list[dict[str, Any]], version: str) -> tuple[list[SentimentDoc], list[PostMark], list[DeadLetter]]:
    """Documents, post marks and dead letters from scored parse rows (pure; unit-testable)."""
    docs: dict[str, SentimentDoc] = {}
    marks: dict[str, PostMark] = {}
    dead: dict[str, DeadLetter] = {}
    done = utcnow()
    for r in rows:
        kind = r["kind"]
        if kind == "dead":
            d = DeadLetter.model_validate_json(r["data"])
            dead[d.dl_id] = d
        elif kind == "mark":
            m = PostMark.model_validate_json(r["data"])
            marks[m.post_id] = m
        elif kind == "item":
            post = Post.model_validate_json(r["data"])
            if r.get("error") or r.get("sentiment") is None:
                payload = post.to_bytes()
                d = DeadLetter.build(payload, stage="score", code="model_failed", reason=r.get("error") or "no answer",
                                     attempts=int(r.get("attempts") or 1), topic=r["topic"], partition=r["partition"],
                                     offset=r["offset"], post_id=post.id, ticker=r["ticker"])
                dead[d.dl_id] = d
                continue
            ans = {"sentiment": r["sentiment"], "score": r["score"], "reasoning": r.get("reasoning") or ""}
            doc = SentimentDoc.build(post, ans, ticker=r["ticker"], asset_class=r["asset_class"] or "equity",
                                     model_version=version, ingested_at=r["ingested_at"],
                                     latency_ms=float(r.get("latency_ms") or 0.0), processed_at=done)
            docs[doc.doc_id] = doc
    return list(docs.values()), list(marks.values()), list(dead.values())


def write_partition(cfg: dict[str, Any], version: str):  # -> Callable[[Iterator[Row]], Iterator[dict]]
    """rdd.mapPartitions function: write one partition's documents, marks and dead letters to the store in
    one session (one bulk request for Elasticsearch), produce the dead letters to the dead-letter topic,
    and yield one stats dict. `version` is the scorer's model version (computed once by the driver). A failure raises, so the batch fails and Spark retries it (writes are
    idempotent)."""

    def run(it: Iterator[Any]) -> Iterator[dict[str, Any]]:
        c = _cfg(cfg)
        rows = []
        for r in it:  # flatten the UDF's answer struct into the row
            d = r.asDict(recursive=True)
            answer = d.pop("answer", None) or {}
            rows.append({**d, **answer})
        if not rows:
            return
        t0 = time.perf_counter()
        docs, marks, dead = build_outputs(rows, version)
        store = store_for(c)
        session = getattr(store, "session", None)
        t1 = time.perf_counter()
        if session is not None:
            with session():
                store.upsert(docs)
                store.mark_posts(marks)
                store.dead_letter(dead)
        else:
            store.upsert(docs)
            store.mark_posts(marks)
            store.dead_letter(dead)
        if dead:
            bus = bus_for(c)
            for d in dead:
                bus.produce(c.dead_letter_topic, d.dl_id, json.dumps(d.to_dict(), ensure_ascii=False).encode("utf-8"))
            bus.flush()
        items = [r for r in rows if r["kind"] == "item"]
        lags = [(d.processed_at.timestamp() - d.ingested_at.timestamp()) * 1000 for d in docs]
        yield {"records": len({(r["topic"], r["partition"], r["offset"]) for r in rows}), "posts": len(marks),
               "items": len(items), "docs": len(docs), "dead_letters": len(dead),
               "model_call_ms": [float(r.get("latency_ms") or 0.0) for r in items],
               "build_ms": (t1 - t0) * 1000, "write_ms": (time.perf_counter() - t1) * 1000, "lags_ms": lags}

    return run
