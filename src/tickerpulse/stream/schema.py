"""The two records every streaming backend shares: `Post` (what sources put on the bus) and `SentimentDoc`
(what processors write to a store). DuckDB and Elasticsearch hold the same document, field for field.

Posts arrive from the outside world and are untrusted: `parse_post` turns raw bus bytes into a `Post` or
raises `PostError` with a machine-readable `code` and a human `reason`, never anything else (out-of-range
or non-finite timestamps, >4300-digit integers, deep nesting, NaN, lone surrogates included), so a
processor can dead-letter the record and keep going. `clamp_event_time` then bounds a post's event time by
its ingest time plus `MAX_FUTURE_S`, so one post dated 2099 cannot drag every dashboard window with it.

Wire format of a post on the bus: one UTF-8 JSON object (see `Post.to_bytes`); the record key is the post id.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Reddit caps self-posts at 40,000 characters; anything much larger is not a post but an attack or a bug.
MAX_POST_BYTES = 128 * 1024
MAX_TEXT_CHARS = 40_000
MAX_ID_CHARS = 200
# How much of a rejected payload a dead letter keeps: a whole post (so it can be redriven after a fix), but
# a 1 MB record over the post limit must not become a 1 MB row (its letter says it was truncated).
DEAD_LETTER_PAYLOAD_BYTES = MAX_POST_BYTES
# How far past its ingest time a post's event time may lie (clock skew of sources) before it is clamped.
MAX_FUTURE_S = 300.0

ErrorCode = Literal["too_large", "not_utf8", "bad_json", "not_object", "invalid"]
AssetClass = Literal["equity", "crypto"]


class PostError(ValueError):
    """A bus record that is not a valid post. `code` is one of `ErrorCode`; `reason` says what exactly."""

    def __init__(self, code: ErrorCode, reason: str):
        self.code, self.reason = code, reason
        super().__init__(f"{code}: {reason}")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _show(value: Any, n: int = 40) -> str:
    """A short repr for error messages (a 5000-digit int must not become a 5000-character reason)."""
    try:
        r = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str() limit
        return f"<{type(value).__name__}, too many digits>"
    return r if len(r) <= n else r[: n - 3] + "..."


def to_utc(value: Any) -> datetime:
    """A datetime from an aware/naive datetime, epoch seconds (int/float/digit string) or ISO-8601 text.
    Naive values are taken as UTC.

    Raises:
        ValueError: for anything else, including non-finite numbers, huge integers and instants outside
            datetime's range in UTC (`1e19`, `"inf"`, `"0001-01-01T00:00:00+05:00"`), so pydantic turns it
            into a validation error instead of an OverflowError escaping.
    """
    try:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            dt = _from_epoch(value)
        elif isinstance(value, str):
            s = value.strip()
            try:
                num = float(s)
            except ValueError:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            else:
                dt = _from_epoch(num)
        else:
            raise ValueError(f"not a timestamp: {type(value).__name__}")
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    except (OverflowError, OSError) as exc:  # fromtimestamp / astimezone past year 1 or 9999
        raise ValueError(f"timestamp out of range: {_show(value)}") from exc
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a timestamp: {_show(value)} ({exc})"[:200]) from exc


def _from_epoch(value: float | int) -> datetime:
    x = float(value)  # OverflowError for an int beyond float (caught by to_utc)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return datetime.fromtimestamp(x, timezone.utc)


def clamp_event_time(created_at: datetime, ingested_at: datetime, max_future_s: float = MAX_FUTURE_S) -> datetime:
    """`created_at`, but never later than `ingested_at + max_future_s`: a post cannot be written after it
    reached the bus, so a later claim is a wrong clock or a lie, and dashboards window by event time."""
    limit = ingested_at + timedelta(seconds=max_future_s)
    return limit if created_at > limit else created_at


def safe_utc(value: Any, default: datetime | None = None) -> datetime:
    """`to_utc(value)`, or `default` (now) when it is not a usable instant: for times the pipeline itself
    must have (a bus record's timestamp), where a bad value must not stop the stream."""
    try:
        return to_utc(value)
    except ValueError:
        return default or utcnow()


def iso(dt: datetime) -> str:
    """`2024-05-01T12:00:00.123Z`: millisecond ISO-8601 in UTC (Elasticsearch's default date format)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Post(BaseModel):
    """One social-media post or headline, as a source saw it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS, description="Source-unique id, e.g. 't3_abc12'.")
    source: str = Field(..., min_length=1, max_length=64, description="'replay', 'reddit', ...")
    text: str = Field(..., max_length=MAX_TEXT_CHARS, description="Title + body for submissions; body for comments.")
    author: str | None = Field(None, max_length=200)
    created_at: datetime = Field(..., description="When the post was written (event time, UTC).")
    url: str | None = Field(None, max_length=2000)
    channel: str | None = Field(None, max_length=200, description="Subreddit, feed or stream name.")
    raw: dict[str, Any] | None = Field(None, description="Source-specific extras; never stored in documents.")

    @field_validator("created_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return to_utc(v)

    @field_validator("id", "text")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("contains a NUL character")
        return v

    @field_validator("raw")
    @classmethod
    def _raw_serializable(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # `raw` is re-serialized by `to_bytes`: it must be plain, finite, UTF-8-encodable JSON (pydantic
        # rejects lone surrogates in the str fields itself, not inside an Any).
        if v is not None:
            try:
                json.dumps(v, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as exc:
                raise ValueError(f"not serializable as JSON ({type(exc).__name__})") from None
        return v

    def to_bytes(self) -> bytes:
        """The bus wire format (UTF-8 JSON, `created_at` as ISO-8601)."""
        d = self.model_dump(exclude_none=True)
        d["created_at"] = iso(self.created_at)
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_post(value: bytes | bytearray | memoryview | str | None, max_bytes: int = MAX_POST_BYTES) -> Post:
    """Validate one untrusted bus record into a `Post`.

    Raises:
        PostError: `too_large` (over `max_bytes`), `not_utf8`, `bad_json`, `not_object`, or `invalid`
            (schema: the reason names the first bad field).
    """
    if value is None:
        raise PostError("invalid", "empty record (no value)")
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    if len(data) > max_bytes:
        raise PostError("too_large", f"{len(data)} bytes > limit {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PostError("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise PostError("bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PostError("bad_json", "nested too deeply") from None
    except ValueError as exc:  # an integer over 4300 digits, NaN/Infinity
        raise PostError("bad_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise PostError("not_object", f"JSON is a {type(obj).__name__}, not an object")
    try:
        return Post.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_show(p, 60) if not isinstance(p, str) else p[:60] for p in first["loc"]) or "post"
        raise PostError("invalid", f"{where}: {first['msg']}"[:500]) from None
    except RecursionError:
        raise PostError("invalid", "nested too deeply") from None
    except Exception as exc:  # the contract is PostError only: a bug here must not stop the stream
        raise PostError("invalid", f"{type(exc).__name__}: {exc}"[:500]) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every record: json.loads(text, parse_constant=...) would build a new one per call (25%
# slower parsing). NaN and Infinity are not JSON; Python accepts them unless told not to.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def doc_id(post_id: str, ticker: str | None, model_version: str) -> str:
    """Deterministic document id: replaying a post through the same model overwrites, never duplicates."""
    key = f"{post_id}\x1f{ticker or ''}\x1f{model_version}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class SentimentDoc(BaseModel):
    """One (post, ticker) judgement as stored (DuckDB row == Elasticsearch document; `doc_id` is the `_id`).

    Times: `timestamp` (`@timestamp` in the dict form) is the post's event time; `ingested_at` when the
    record entered the bus; `processed_at` when the document was built. End-to-end lag =
    processed_at - ingested_at. `latency_ms` is the wall time of the model call that produced it.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    doc_id: str
    timestamp: datetime = Field(..., alias="@timestamp")
    post_id: str
    ticker: str
    asset_class: AssetClass = "equity"
    sentiment: Literal["negative", "neutral", "positive"]
    score: float = Field(..., ge=-1.0, le=1.0)
    reasoning: str = ""
    text: str
    source: str
    channel: str | None = None
    author: str | None = None
    url: str | None = None
    model_version: str
    ingested_at: datetime
    processed_at: datetime
    latency_ms: float = 0.0

    @field_validator("timestamp", "ingested_at", "processed_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return to_utc(v)

    @classmethod
    def build(
        cls,
        post: Post,
        answer: dict[str, Any],
        *,
        ticker: str,
        asset_class: AssetClass,
        model_version: str,
        ingested_at: datetime | float,
        latency_ms: float,
        processed_at: datetime | None = None,
        max_text_chars: int = 2000,
    ) -> "SentimentDoc":
        """The document for `post` judged `answer` ({sentiment, score, reasoning}) about `ticker`."""
        text = post.text if len(post.text) <= max_text_chars else post.text[:max_text_chars] + " ..."
        return cls(
            doc_id=doc_id(post.id, ticker, model_version),
            timestamp=post.created_at,
            post_id=post.id,
            ticker=ticker,
            asset_class=asset_class,
            sentiment=answer["sentiment"],
            score=max(-1.0, min(1.0, float(answer["score"]))),
            reasoning=str(answer.get("reasoning") or ""),
            text=text,
            source=post.source,
            channel=post.channel,
            author=post.author,
            url=post.url,
            model_version=model_version,
            ingested_at=ingested_at,
            processed_at=processed_at or utcnow(),
            latency_ms=round(float(latency_ms), 3),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (Elasticsearch `_source`): `@timestamp` key, dates as ISO-8601 UTC strings."""
        d = self.model_dump(by_alias=True)
        for k in ("@timestamp", "ingested_at", "processed_at"):
            d[k] = iso(d[k])
        return d


# Field types of a SentimentDoc, for stores that need a mapping (Elasticsearch) or DDL (DuckDB).
DOC_FIELDS: dict[str, str] = {
    "doc_id": "keyword",
    "@timestamp": "date",
    "post_id": "keyword",
    "ticker": "keyword",
    "asset_class": "keyword",
    "sentiment": "keyword",
    "score": "float",
    "reasoning": "text",
    "text": "text",
    "source": "keyword",
    "channel": "keyword",
    "author": "keyword",
    "url": "keyword",
    "model_version": "keyword",
    "ingested_at": "date",
    "processed_at": "date",
    "latency_ms": "float",
}


class DeadLetter(BaseModel):
    """A record the pipeline gave up on. `dl_id` is deterministic (bus position or payload hash), so a
    replayed bad record is stored once. `payload` is the record whole up to `max_payload_bytes` (the post
    size limit; `payload_bytes` > the kept size means it was cut, and such a letter cannot be redriven):
    UTF-8 text as is, anything else base64 (`payload_encoding`), so a redrive puts back the exact bytes."""

    model_config = ConfigDict(extra="forbid")

    dl_id: str
    stage: Literal["parse", "score", "store"] = "parse"
    code: str
    reason: str
    payload: str
    payload_bytes: int
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    attempts: int = 1
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    post_id: str | None = None
    ticker: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def build(cls, payload: bytes | str | None, *, stage: str, code: str, reason: str, attempts: int = 1,
              topic: str | None = None, partition: int | None = None, offset: int | None = None,
              post_id: str | None = None, ticker: str | None = None,
              max_payload_bytes: int = DEAD_LETTER_PAYLOAD_BYTES) -> "DeadLetter":
        data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload or b"")
        kept = data[:max_payload_bytes]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        if topic is not None and offset is not None:
            key = f"{topic}\x1f{partition}\x1f{offset}\x1f{stage}\x1f{ticker or ''}"
        else:
            key = f"{hashlib.sha256(data).hexdigest()}\x1f{stage}\x1f{post_id or ''}\x1f{ticker or ''}"
        return cls(
            dl_id=hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32],
            stage=stage, code=code, reason=reason[:1000],
            payload=text, payload_encoding=encoding,
            payload_bytes=len(data), attempts=attempts, topic=topic, partition=partition, offset=offset,
            post_id=post_id, ticker=ticker,
        )

    @property
    def truncated(self) -> bool:
        """The record was larger than what the letter kept (it cannot be redriven as it was)."""
        return len(self.raw_payload()) < self.payload_bytes

    def raw_payload(self) -> bytes:
        """The kept bytes of the original record, exactly."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")

    def preview(self, n: int = 120) -> str:
        """The start of the payload as text (replacement characters for non-UTF-8), for listings."""
        text = self.raw_payload()[: n * 4].decode("utf-8", "replace")
        return text if len(text) <= n else text[: n - 3] + "..."

    def to_dict(self, payload_chars: int | None = None) -> dict[str, Any]:
        """JSON-ready form. The whole payload by default (the dead-letter topic needs it to redrive);
        `payload_chars` gives a text preview instead (a listing or a dashboard: payloads reach 128 KB)."""
        d = self.model_dump()
        d["created_at"] = iso(self.created_at)
        if payload_chars is not None:
            d["payload"] = self.preview(payload_chars)
        return d


class PostMark(BaseModel):
    """One processed post (with or without tickers), so posts without a ticker are counted, not lost.
    Keyed by `post_id`: replays overwrite."""

    model_config = ConfigDict(extra="forbid")

    post_id: str
    source: str
    created_at: datetime
    ingested_at: datetime
    processed_at: datetime
    n_tickers: int
    tickers: list[str] = Field(default_factory=list)

    @field_validator("created_at", "ingested_at", "processed_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return to_utc(v)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump()
        for k in ("created_at", "ingested_at", "processed_at"):
            d[k] = iso(d[k])
        return d
