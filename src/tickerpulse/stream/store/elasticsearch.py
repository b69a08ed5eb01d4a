"""The Elasticsearch store (official `elasticsearch` client): the `Store` protocol on any server speaking the
Elasticsearch 8/9 REST API (Elasticsearch, noida-db; see docs/stream-distributed.md).

Indices (`index` = `tickerpulse-sentiment` by default):
  - `<index>`               sentiment documents, `_id` = `doc_id` (mapping: `stream/kibana/index-template.json`,
                            installed as an index template, so Kibana users get the same mapping);
  - `<index>-posts`         processed-post marks, `_id` = `post_id`;
  - `<index>-dead-letters`  dead letters, `_id` = `dl_id`;
  - `<index>-heartbeats`    one document per pipeline component, `_id` = its name.
Deterministic `_id`s make every write an idempotent upsert, so replays never duplicate.

Writes go through the bulk API with retries: the client retries connection errors, timeouts and 429/502/
503/504; `helpers.bulk` retries rejected items with backoff; anything still failing raises
`StoreWriteError` (the processor then does not commit its offsets). `session()` buffers a micro-batch's
writes into one bulk request followed by one refresh.

Aggregates use only what noida-db supports too (terms, avg, filters, cardinality, top_hits, date_histogram
and sorted searches). Not used on purpose: percentiles (`latency_sample` + client-side percentiles
instead), min/max on dates (noida-db returns null: a sorted size-1 search instead), pipeline aggs.

Known limitations: `ticker_stats` ranks at most `max_buckets` tickers by mentions before the client-side
ranking; `latency_sample` and `doc_ids` read at most 10,000 hits per request (the default result window).
Talking to an Elasticsearch 8 server with this 9.x client needs `store_options.compat: 8`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from tickerpulse._optional import require
from tickerpulse.config import ConfigError
from tickerpulse.stream.schema import DeadLetter, PostMark, SentimentDoc, iso, to_utc, utcnow
from tickerpulse.stream.store.base import Point, TickerStat, TopBy, top

log = logging.getLogger("tickerpulse.stream.elasticsearch")
_OPTION_KEYS = {"api_key", "username", "password", "ca_certs", "verify_certs", "request_timeout", "refresh",
                "compat", "shards", "replicas", "max_buckets"}

_AUX_MAPPINGS: dict[str, dict[str, Any]] = {
    "posts": {"dynamic": "false", "properties": {
        "post_id": {"type": "keyword"}, "source": {"type": "keyword"}, "created_at": {"type": "date"},
        "ingested_at": {"type": "date"}, "processed_at": {"type": "date"}, "n_tickers": {"type": "integer"},
        "tickers": {"type": "keyword"}}},
    "dead-letters": {"dynamic": "false", "properties": {
        "dl_id": {"type": "keyword"}, "stage": {"type": "keyword"}, "code": {"type": "keyword"},
        "reason": {"type": "text"}, "payload": {"type": "text", "index": False},
        "payload_encoding": {"type": "keyword"},
        "payload_bytes": {"type": "long"}, "attempts": {"type": "integer"}, "topic": {"type": "keyword"},
        "partition": {"type": "integer"}, "offset": {"type": "long"}, "post_id": {"type": "keyword"},
        "ticker": {"type": "keyword"}, "created_at": {"type": "date"}}},
    "heartbeats": {"dynamic": "false", "properties": {
        "name": {"type": "keyword"}, "updated": {"type": "date"},
        "metrics": {"type": "keyword", "index": False, "doc_values": False}}},
}


def _iso(dt: datetime) -> str:
    """ISO-8601 as the DuckDB store prints it (`...:29Z`, `...:29.123000Z`), so both stores agree exactly."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class StoreWriteError(RuntimeError):
    """Some documents could not be written after retries (the message quotes the first errors)."""


def index_template(index: str = "tickerpulse-sentiment", shards: int | None = None,
                   replicas: int | None = None) -> dict[str, Any]:
    """The shipped index template (`stream/kibana/index-template.json`) for documents index `index`."""
    from tickerpulse.stream.kibana import template_path

    tpl = json.loads(template_path().read_text(encoding="utf-8"))
    tpl["index_patterns"] = [index]
    settings = tpl["template"]["settings"]
    if shards is not None:
        settings["number_of_shards"] = int(shards)
    if replicas is not None:
        settings["number_of_replicas"] = int(replicas)
    return tpl


class ElasticsearchStore:
    """`Store` on an Elasticsearch-API server.

    Args:
        url: server URL, e.g. "http://127.0.0.1:9200".
        index: documents index (aux indices get suffixes, see the module docstring).
        read_only: never create templates or indices (dashboards); missing indices read as empty.
        refresh: refresh after each write ("true"), wait for the next refresh ("wait_for") or not ("false":
            fastest; new documents become searchable within the index's refresh interval).
        compat: 8 to send Elasticsearch-8 compatibility headers (a 9.x client against an 8.x server).
        max_buckets: tickers fetched per `ticker_stats` call before client-side ranking.
        api_key, username, password, ca_certs, verify_certs, request_timeout: connection settings.
    """

    def __init__(self, url: str = "http://127.0.0.1:9200", index: str = "tickerpulse-sentiment", *,
                 read_only: bool = False, refresh: str | bool = "true", compat: int | None = None,
                 shards: int | None = None, replicas: int | None = None, max_buckets: int = 1000,
                 api_key: str | None = None, username: str | None = None, password: str | None = None,
                 ca_certs: str | None = None, verify_certs: bool | None = None, request_timeout: float = 30.0):
        es = require("elasticsearch", "the Elasticsearch store")
        quiet = logging.getLogger("elastic_transport.transport")  # one INFO line per request otherwise
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
        self.url, self.index, self.read_only = url, index, read_only
        self.refresh = str(refresh).lower()
        if self.refresh not in {"true", "false", "wait_for"}:
            raise ConfigError(f"store_options.refresh must be true, false or wait_for, got {refresh!r}")
        self.max_buckets = int(max_buckets)
        kw: dict[str, Any] = {"request_timeout": request_timeout, "max_retries": 5, "retry_on_timeout": True,
                              "retry_on_status": (429, 502, 503, 504)}
        if api_key:
            kw["api_key"] = api_key
        if username:
            kw["basic_auth"] = (username, password or "")
        if ca_certs:
            kw["ca_certs"] = ca_certs
        if verify_certs is not None:
            kw["verify_certs"] = bool(verify_certs)
        if compat:
            mime = f"application/vnd.elasticsearch+json; compatible-with={int(compat)}"
            kw["headers"] = {"accept": mime, "content-type": mime}
        self.es = es.Elasticsearch(url, **kw)
        self._helpers = require("elasticsearch.helpers")
        self._not_found = es.NotFoundError
        self._lock = threading.RLock()
        self._buffer: list[dict[str, Any]] | None = None
        self._depth = 0
        self.indices = {"docs": index, **{k: f"{index}-{k}" for k in _AUX_MAPPINGS}}
        if not read_only:
            self.setup(shards=shards, replicas=replicas)

    # -- setup -------------------------------------------------------------------------------------
    def setup(self, shards: int | None = None, replicas: int | None = None) -> None:
        """Install the index templates and create missing indices (idempotent)."""
        tpl = index_template(self.index, shards, replicas)
        self.es.indices.put_index_template(name=self.index, **tpl)
        settings = tpl["template"]["settings"]
        for kind, mapping in _AUX_MAPPINGS.items():
            self.es.indices.put_index_template(name=self.indices[kind], index_patterns=[self.indices[kind]],
                                               priority=200, template={"settings": settings, "mappings": mapping})
        for name in self.indices.values():
            if not self.es.indices.exists(index=name):
                with contextlib.suppress(require("elasticsearch").BadRequestError):  # created meanwhile
                    self.es.indices.create(index=name)

    # -- writes ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Buffer writes made inside the block and send them as one bulk request (plus one refresh) on exit."""
        with self._lock:
            outer = self._buffer is None
            if outer:
                self._buffer = []
            self._depth += 1
            try:
                yield
            except BaseException:
                if outer:
                    self._buffer = None
                raise
            finally:
                self._depth -= 1
            if outer:
                actions, self._buffer = self._buffer, None
                self._bulk(actions)

    def _write(self, actions: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._buffer is not None:
                self._buffer.extend(actions)
            else:
                self._bulk(actions)

    def _bulk(self, actions: list[dict[str, Any]]) -> None:
        if not actions:
            return
        if self.read_only:
            raise StoreWriteError("this Elasticsearch store was opened read-only")
        ok, errors = self._helpers.bulk(self.es, actions, max_retries=3, initial_backoff=0.5, max_backoff=10,
                                        raise_on_error=False, refresh=self.refresh, chunk_size=1000)
        if errors:
            first = "; ".join(json.dumps(e, default=str)[:300] for e in errors[:3])
            raise StoreWriteError(f"{len(errors)} of {len(actions)} bulk items failed: {first}")

    def upsert(self, docs: Sequence[SentimentDoc]) -> int:
        idx = self.indices["docs"]
        self._write([{"_op_type": "index", "_index": idx, "_id": d.doc_id, "_source": d.to_dict()} for d in docs])
        return len(docs)

    def mark_posts(self, marks: Sequence[PostMark]) -> None:
        idx = self.indices["posts"]
        self._write([{"_op_type": "index", "_index": idx, "_id": m.post_id, "_source": m.to_dict()} for m in marks])

    def dead_letter(self, items: Sequence[DeadLetter]) -> None:
        """Index dead letters; a repeated `dl_id` keeps its first `created_at` and the larger `attempts`
        (read, then write)."""
        if not items:
            return
        idx = self.indices["dead-letters"]
        items = list({d.dl_id: d for d in items}.values())
        prev = {}
        for hit in self.es.mget(index=idx, ids=[d.dl_id for d in items], source=["attempts", "created_at"])["docs"]:
            if hit.get("found"):
                prev[hit["_id"]] = hit["_source"]
        actions = []
        for d in items:
            src = d.to_dict()
            if d.dl_id in prev:  # like the DuckDB store: first sighting's time, latest reason, most attempts
                src["attempts"] = max(d.attempts, int(prev[d.dl_id].get("attempts") or 0))
                src["created_at"] = prev[d.dl_id].get("created_at") or src["created_at"]
            actions.append({"_op_type": "index", "_index": idx, "_id": d.dl_id, "_source": src})
        self._write(actions)

    def heartbeat(self, name: str, metrics: Mapping[str, Any]) -> None:
        src = {"name": name, "updated": iso(utcnow()), "metrics": json.dumps(dict(metrics), default=str)}
        self._write([{"_op_type": "index", "_index": self.indices["heartbeats"], "_id": name, "_source": src}])

    def refresh_now(self) -> None:
        """Make everything written so far searchable (tests, after `refresh=false` writes)."""
        self.es.indices.refresh(index=",".join(self.indices.values()), ignore_unavailable=True)

    # -- reads -------------------------------------------------------------------------------------
    def _search(self, kind: str, **body: Any) -> dict[str, Any]:
        try:
            return self.es.search(index=self.indices[kind], ignore_unavailable=True, **body).body
        except self._not_found:
            return {"hits": {"hits": [], "total": {"value": 0}}, "aggregations": {}}

    def _count(self, kind: str, query: dict[str, Any] | None = None) -> int:
        try:
            kw = {"query": query} if query else {}
            return int(self.es.count(index=self.indices[kind], ignore_unavailable=True, **kw)["count"])
        except self._not_found:
            return 0

    def counts(self) -> dict[str, int]:
        card = self._search("docs", size=0, aggs={"t": {"cardinality": {"field": "ticker", "precision_threshold": 40000}}})
        posts_with = self._count("posts", {"range": {"n_tickers": {"gt": 0}}})
        return {
            "docs": self._count("docs"),
            "posts": self._count("posts"),
            "posts_with_ticker": posts_with,
            "posts_without_ticker": self._count("posts", {"term": {"n_tickers": 0}}),
            "dead_letters": self._count("dead-letters"),
            "tickers": int(((card.get("aggregations") or {}).get("t") or {}).get("value") or 0),
        }

    def _edge(self, order: str) -> datetime | None:
        """Oldest ("asc") or newest ("desc") document time (a sorted search: noida-db has no max on dates)."""
        hits = self._search("docs", size=1, sort=[{"@timestamp": order}], source=["@timestamp"])["hits"]["hits"]
        return to_utc(hits[0]["_source"]["@timestamp"]) if hits else None

    def _window(self, window_s: float, now: datetime | None) -> tuple[datetime, datetime] | None:
        anchor = to_utc(now) if now is not None else self._edge("desc")
        if anchor is None:
            return None
        return anchor - timedelta(seconds=window_s), anchor

    @staticmethod
    def _range(since: datetime, anchor: datetime) -> dict[str, Any]:
        return {"range": {"@timestamp": {"gt": iso(since), "lte": iso(anchor)}}}

    def ticker_stats(self, window_s: float = 3600, limit: int = 50, by: TopBy = "mentions",
                     now: datetime | None = None) -> list[TickerStat]:
        win = self._window(window_s, now)
        if win is None:
            return []
        since, anchor = win
        aggs = {"t": {"terms": {"field": "ticker", "size": max(self.max_buckets, limit)}, "aggs": {
            "score": {"avg": {"field": "score"}},
            "sent": {"terms": {"field": "sentiment", "size": 3}},
            "asset": {"terms": {"field": "asset_class", "size": 1}},
            "last": {"top_hits": {"size": 1, "sort": [{"@timestamp": "desc"}], "_source": ["@timestamp"]}},
        }}}
        res = self._search("docs", size=0, query=self._range(since, anchor), aggs=aggs)
        buckets = ((res.get("aggregations") or {}).get("t") or {}).get("buckets") or []
        if not buckets:
            return []
        first = self._edge("asc") or since
        span_s = max(60.0, min(window_s, (anchor - max(first, since)).total_seconds()))
        stats = []
        for b in buckets:
            sent = {s["key"]: int(s["doc_count"]) for s in b["sent"]["buckets"]}
            asset = b["asset"]["buckets"][0]["key"] if b["asset"]["buckets"] else "equity"
            last_hits = b["last"]["hits"]["hits"]
            last = _iso(to_utc(last_hits[0]["_source"]["@timestamp"])) if last_hits else ""
            n = int(b["doc_count"])
            stats.append(TickerStat(b["key"], asset, n, float(b["score"]["value"] or 0.0), sent.get("positive", 0),
                                    sent.get("neutral", 0), sent.get("negative", 0), n / (span_s / 60), last))
        return top(stats, by, limit)

    def timeseries(self, ticker: str, bucket_s: int = 60, window_s: float = 3600,
                   now: datetime | None = None) -> list[Point]:
        win = self._window(window_s, now)
        if win is None:
            return []
        since, anchor = win
        bucket_s = max(1, int(bucket_s))
        query = {"bool": {"filter": [self._range(since, anchor), {"term": {"ticker": ticker}}]}}
        aggs = {"h": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{bucket_s}s", "min_doc_count": 1},
                      "aggs": {"score": {"avg": {"field": "score"}}}}}
        res = self._search("docs", size=0, query=query, aggs=aggs)
        out = []
        for b in ((res.get("aggregations") or {}).get("h") or {}).get("buckets") or []:
            if b["doc_count"]:
                t = _iso(datetime.fromtimestamp(b["key"] / 1000, timezone.utc))
                out.append(Point(t, int(b["doc_count"]), float(b["score"]["value"] or 0.0)))
        return out

    def latest(self, limit: int = 20, ticker: str | None = None) -> list[SentimentDoc]:
        kw: dict[str, Any] = {"query": {"term": {"ticker": ticker}}} if ticker else {}
        res = self._search("docs", size=int(limit), sort=[{"processed_at": "desc"}, {"doc_id": "asc"}], **kw)
        return [SentimentDoc.model_validate(h["_source"]) for h in res["hits"]["hits"]]

    def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        res = self._search("dead-letters", size=int(limit), sort=[{"created_at": "desc"}, {"dl_id": "asc"}])
        return [DeadLetter.model_validate(h["_source"]) for h in res["hits"]["hits"]]

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        res = self._search("heartbeats", size=100)
        out = {}
        for h in res["hits"]["hits"]:
            s = h["_source"]
            out[s["name"]] = {**json.loads(s.get("metrics") or "{}"), "updated": s.get("updated", "")}
        return out

    def latency_sample(self, limit: int = 5000) -> list[dict[str, float]]:
        res = self._search("docs", size=min(int(limit), 10_000), sort=[{"processed_at": "desc"}],
                           source=["processed_at", "ingested_at", "latency_ms"])
        out = []
        for h in res["hits"]["hits"]:
            s = h["_source"]
            lag = (to_utc(s["processed_at"]) - to_utc(s["ingested_at"])).total_seconds() * 1000
            out.append({"lag_ms": lag, "latency_ms": float(s.get("latency_ms") or 0.0)})
        return out

    def doc_ids(self, limit: int = 10_000) -> list[str]:
        """Document ids (tests count duplicates with it; at most `limit`)."""
        res = self._search("docs", size=min(limit, 10_000), sort=[{"doc_id": "asc"}], source=["doc_id"])
        return [h["_source"]["doc_id"] for h in res["hits"]["hits"]]

    def close(self) -> None:
        self.es.close()


def store_kwargs(cfg: Any) -> dict[str, Any]:
    """Constructor arguments of `ElasticsearchStore` from a `StreamConfig` (validated `store_options`)."""
    opts = dict(getattr(cfg, "store_options", None) or {})
    unknown = set(opts) - _OPTION_KEYS
    if unknown:
        raise ConfigError(f"unknown store_options for --store elasticsearch: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_OPTION_KEYS))})")
    return {"url": cfg.es_url, "index": cfg.es_index, **opts}


def open_store(cfg: Any, read_only: bool = False) -> ElasticsearchStore:
    """Registry hook: the store for a `StreamConfig` (`es_url`, `es_index`, `store_options`)."""
    return ElasticsearchStore(read_only=read_only, **store_kwargs(cfg))
