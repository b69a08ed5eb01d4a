"""`StreamConfig`: every knob of the streaming pipeline, shared by all backends (defaults < YAML < flags).

Backend-specific settings a later backend needs beyond the named fields go in `bus_options` /
`store_options` / `processor_options` (free-form; the backend validates its own keys and names them in
errors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tickerpulse.config import ConfigError, StrictModel
from tickerpulse.stream.bus.base import DEFAULT_GROUP, DEFAULT_TOPIC, dead_letter_topic


class StreamConfig(StrictModel):
    """Where posts flow (bus), who processes them (processor, scorer) and where results go (store)."""

    # -- where things live --------------------------------------------------------------------------
    dir: Path = Field(Path("tickerpulse-stream"), description="Working folder of the embedded backends.")
    bus: str = Field("sqlite", description="Bus backend: sqlite (embedded) or kafka.")
    bus_path: Path | None = Field(None, description="SQLite bus file (default <dir>/bus.sqlite).")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (kafka bus).")
    topic: str = Field(DEFAULT_TOPIC, description="Topic of raw posts.")
    dead_letter_topic: str | None = Field(None, description="Dead-letter topic (default <topic>.dlq).")
    group: str = Field(DEFAULT_GROUP, description="Consumer group of the processor.")
    store: str = Field("duckdb", description="Store backend: duckdb (embedded) or elasticsearch.")
    db: Path | None = Field(None, description="DuckDB store file (default <dir>/store.duckdb).")
    es_url: str = Field("http://127.0.0.1:9200", description="Elasticsearch URL (elasticsearch store).")
    es_index: str = Field("tickerpulse-sentiment", description="Elasticsearch index (or alias) of documents.")
    processor: str = Field("local", description="Processor: local (this process) or spark.")
    bus_options: dict[str, Any] = Field(default_factory=dict, description="Extra settings of the bus backend.")
    store_options: dict[str, Any] = Field(default_factory=dict, description="Extra settings of the store backend.")
    processor_options: dict[str, Any] = Field(default_factory=dict, description="Extra settings of the processor.")

    # -- scoring -----------------------------------------------------------------------------------
    scorer: Literal["engine", "http", "vader"] = Field("engine", description="Who judges sentiment.")
    model: str = Field("smollm2-135m", description="Model name or folder (engine scorer).")
    adapter: str | None = Field(None, description="LoRA adapter run folder (engine scorer).")
    mode: Literal["fast", "reasoning"] = Field("fast", description="fast = label scoring; reasoning = generated JSON.")
    url: str = Field("http://127.0.0.1:8080", description="Server base URL (http scorer).")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight (http scorer).")
    api_key_env: str = Field("TICKERPULSE_API_KEY", min_length=1,
                             description="Environment variable holding the server's API key (http scorer).")
    scorer_timeout: float = Field(120.0, gt=0, description="Seconds one request may take (http scorer).")

    # -- processing --------------------------------------------------------------------------------
    max_records: int = Field(256, ge=1, le=100_000, description="Records per micro-batch (also Spark's maxOffsetsPerTrigger).")
    score_batch: int = Field(16, ge=1, le=4096, description="(post, ticker) items per model call.")
    poll_timeout: float = Field(1.0, gt=0, description="Seconds a poll waits for the first record.")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries of a failing model call before dead-lettering.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay (doubles each retry).")
    max_backoff_s: float = Field(30.0, gt=0, description="Longest wait between tries while the scorer is unavailable.")
    max_post_bytes: int = Field(128 * 1024, ge=1024, description="Larger bus records are dead-lettered.")
    max_tickers_per_post: int = Field(8, ge=1, le=100, description="Judge at most this many tickers of one post.")
    names: bool = Field(True, description="Find tickers by company name too (\"Tesla is tanking\" -> TSLA); false: "
                        "cashtags, exchange prefixes and known upper-case symbols only.")
    max_future_s: float = Field(300.0, ge=0, description="A post's event time is clamped to its ingest time plus "
                                "this (a post dated 2099 must not own every dashboard window).")
    max_batch_s: float = Field(600.0, gt=0, description="Time budget of one micro-batch, poll to commit (scoring, "
                               "retries, pauses, write); Kafka's max.poll.interval.ms is set from it.")
    log_retention_s: float = Field(86_400.0, ge=0, description="Embedded bus: records every committing group has "
                                   "passed are deleted once this old (0 = at once; .inf = keep everything).")

    @model_validator(mode="after")
    def _defaults(self) -> "StreamConfig":
        if self.bus_path is None:
            object.__setattr__(self, "bus_path", self.dir / "bus.sqlite")
        if self.db is None:
            object.__setattr__(self, "db", self.dir / "store.duckdb")
        if self.dead_letter_topic is None:
            object.__setattr__(self, "dead_letter_topic", dead_letter_topic(self.topic))
        if self.dead_letter_topic == self.topic:
            raise ConfigError("--dead-letter-topic must differ from --topic")
        return self
