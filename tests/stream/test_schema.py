"""Untrusted bus records -> Post or a typed PostError; deterministic document ids; the stored form."""

from __future__ import annotations

import json

import pytest

from tickerpulse.stream.schema import (
    DEAD_LETTER_PAYLOAD_BYTES, DOC_FIELDS, DeadLetter, Post, PostError, SentimentDoc, doc_id, parse_post)

GOOD = {"id": "p1", "source": "replay", "text": "$AAPL up", "created_at": "2024-05-01T12:00:00Z"}


@pytest.mark.parametrize("value,code,reason", [
    (b"{not json", "bad_json", "Expecting property name"),
    (b"\xff\xfe\x00garbage", "not_utf8", "invalid UTF-8 at byte 0"),
    (json.dumps({**GOOD, "text": "x" * 1_000_000}).encode(), "too_large", "bytes > limit"),
    (b"[1, 2, 3]", "not_object", "JSON is a list"),
    (b'"just a string"', "not_object", "JSON is a str"),
    (json.dumps({**GOOD, "id": ""}).encode(), "invalid", "id:"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "text"}).encode(), "invalid", "text: Field required"),
    (json.dumps({**GOOD, "created_at": "yesterday"}).encode(), "invalid", "created_at"),
    (json.dumps({**GOOD, "evil": 1}).encode(), "invalid", "evil: Extra inputs"),
    (json.dumps({**GOOD, "text": "a\x00b"}).encode(), "invalid", "NUL"),
    (b"[" * 100_000, "bad_json", ""),
    (None, "invalid", "empty record"),
])
def test_parse_post_rejects_with_typed_reason(value: bytes | None, code: str, reason: str) -> None:
    with pytest.raises(PostError) as info:
        parse_post(value)
    assert info.value.code == code and reason in info.value.reason


def test_parse_post_roundtrip_and_timestamps() -> None:
    p = parse_post(json.dumps({**GOOD, "created_at": 1714564800, "channel": "stocks"}).encode())
    assert p.created_at.isoformat() == "2024-05-01T12:00:00+00:00" and p.channel == "stocks"
    again = parse_post(p.to_bytes())
    assert again == p
    assert parse_post(json.dumps({**GOOD, "created_at": "2024-05-01 14:00:00+02:00"})).created_at == p.created_at


def test_doc_id_is_deterministic_and_keyed_on_version() -> None:
    a = doc_id("p1", "AAPL", "m:v1:fast")
    assert a == doc_id("p1", "AAPL", "m:v1:fast") and len(a) == 32
    assert len({a, doc_id("p1", "MSFT", "m:v1:fast"), doc_id("p1", "AAPL", "m:v1:reasoning"), doc_id("p2", "AAPL", "m:v1:fast")}) == 4


def test_sentiment_doc_dict_matches_the_shared_field_list() -> None:
    post = Post(**GOOD)
    d = SentimentDoc.build(post, {"sentiment": "positive", "score": 1.7, "reasoning": "up"}, ticker="AAPL",
                           asset_class="equity", model_version="v", ingested_at=1714564801.5, latency_ms=12.3456,
                           processed_at=Post(**GOOD).created_at)
    out = d.to_dict()
    assert set(out) == set(DOC_FIELDS)
    assert out["@timestamp"] == "2024-05-01T12:00:00.000Z" and out["ingested_at"] == "2024-05-01T12:00:01.500Z"
    assert out["score"] == 1.0 and out["doc_id"] == doc_id("p1", "AAPL", "v") and out["latency_ms"] == 12.346
    assert SentimentDoc.model_validate(out) == d  # the stored form reads back


def test_dead_letter_truncates_payload_and_keys_on_position() -> None:
    big = b"\xff" + b"x" * 1_000_000
    d1 = DeadLetter.build(big, stage="parse", code="too_large", reason="r", topic="t", partition=0, offset=7)
    d2 = DeadLetter.build(big, stage="parse", code="too_large", reason="r", topic="t", partition=0, offset=7)
    assert d1.dl_id == d2.dl_id and d1.payload_bytes == 1_000_001
    # cut at the post size limit, kept as exact bytes (base64: not UTF-8), and it says so
    assert d1.payload_encoding == "base64" and d1.raw_payload() == big[:DEAD_LETTER_PAYLOAD_BYTES]
    assert d1.truncated and d1.preview(5).startswith("\ufffd")
    assert len(d1.to_dict(payload_chars=50)["payload"]) == 50 and d1.to_dict()["payload"] == d1.payload


def test_dead_letter_keeps_a_whole_post_exactly() -> None:
    post = json.dumps({**GOOD, "text": "$AAPL " + "é" * 40_000}, ensure_ascii=False).encode()
    d = DeadLetter.build(post, stage="score", code="model_failed", reason="r")
    assert len(post) > 2048 and d.payload_encoding == "utf-8" and not d.truncated and d.raw_payload() == post
    odd = b'{"id": "x", "text": "\xff"}'
    d2 = DeadLetter.model_validate(json.loads(json.dumps(DeadLetter.build(odd, stage="parse", code="not_utf8",
                                                                            reason="r").to_dict())))
    assert d2.raw_payload() == odd and not d2.truncated  # survives the DLQ topic's JSON form


@pytest.mark.parametrize("value,code,reason", [
    # each of these stopped the processor with an exception that was not a PostError (issue #26)
    (json.dumps({**GOOD, "created_at": 1e19}).encode(), "invalid", "timestamp out of range"),
    (json.dumps({**GOOD, "created_at": "inf"}).encode(), "invalid", "not a finite number"),
    (json.dumps({**GOOD, "created_at": "0001-01-01T00:00:00+05:00"}).encode(), "invalid", "out of range"),
    (json.dumps({**GOOD, "created_at": -1e300}).encode(), "invalid", "out of range"),
    (json.dumps({**GOOD, "created_at": "9" * 400}).encode(), "invalid", "created_at"),
    (('{"id": "p", "source": "s", "text": "t", "created_at": 1, "raw": {"n": %s}}' % ("9" * 5000)).encode(),
     "bad_json", "4300"),
    (('{"id": "p", "source": "s", "text": "t", "created_at": %s}' % ("9" * 5000)).encode(), "bad_json", "4300"),
    (b'{"id": "p", "source": "s", "text": "t", "created_at": NaN}', "bad_json", "NaN is not valid JSON"),
    (b'{"id": "p", "source": "s", "text": "t \ud800", "created_at": 1}', "invalid", "text: "),
    (b'{"id": "p", "source": "s", "text": "t", "created_at": 1, "raw": {"k": "\udfff"}}', "invalid", "raw"),
    (('{"id": "p", "source": "s", "text": "t", "created_at": 1, "raw": {"a": %s1%s}}'
      % ("[" * 5000, "]" * 5000)).encode(), "bad_json", "nested too deeply"),
    (json.dumps({**GOOD, "created_at": True}).encode(), "invalid", "created_at"),
    (json.dumps({**GOOD, "id": 7}).encode(), "invalid", "id"),
])
def test_parse_post_never_raises_anything_but_post_error(value: bytes, code: str, reason: str) -> None:
    with pytest.raises(PostError) as info:
        parse_post(value)
    assert info.value.code == code and reason in info.value.reason, info.value


def test_event_time_is_clamped_to_ingest_time() -> None:
    from datetime import timedelta

    from tickerpulse.stream.schema import MAX_FUTURE_S, clamp_event_time, safe_utc, to_utc

    ingest = to_utc("2026-01-01T00:00:00Z")
    assert clamp_event_time(to_utc("2099-01-01T00:00:00Z"), ingest) == ingest + timedelta(seconds=MAX_FUTURE_S)
    assert clamp_event_time(ingest + timedelta(seconds=10), ingest) == ingest + timedelta(seconds=10)  # skew kept
    assert clamp_event_time(to_utc("1999-01-01T00:00:00Z"), ingest) == to_utc("1999-01-01T00:00:00Z")
    assert safe_utc(1e19, ingest) == ingest and safe_utc(float("nan"), ingest) == ingest
