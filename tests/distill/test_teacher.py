"""Teacher clients: answer checks (case table), Retry-After parsing, the token bucket, the gold teacher, and
the OpenAI teacher over HTTP against the real gold-echo server with every injected fault."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tickerpulse.task.contract import SentimentAnswer, resolve_target
from tickerpulse.distill.teacher import (
    GoldTeacher,
    Item,
    OpenAITeacher,
    TeacherError,
    TokenBucket,
    check_answer,
    known_prices,
    retry_after,
    schema_for,
)
from tickerpulse.distill.testing_teacher import TeacherServer, TeacherState

A = lambda **kw: json.dumps({"ticker": "AAPL", "sentiment": "positive", "score": 0.6, "reasoning": "r", **kw})  # noqa: E731

# (answer text, target, tickers in text, expected reason fragment or None for valid)
CHECK_CASES = [
    (A(), "AAPL", ["AAPL"], None),
    (A(ticker="$aapl"), "AAPL", ["AAPL"], None),  # normalised by the schema
    (A(ticker=None), None, [], None),
    (A(ticker="MSFT"), "AAPL", ["AAPL", "MSFT"], "the question is about AAPL, the answer names MSFT"),
    (A(ticker=None), "AAPL", ["AAPL"], "the question is about AAPL, the answer names None"),
    (A(ticker="TSLA"), None, [], "TSLA is not mentioned in the post"),
    (A(score=1.7), "AAPL", ["AAPL"], "less than or equal to 1"),
    (A(score=-0.3), "AAPL", ["AAPL"], "contradicts sentiment positive"),
    (A(sentiment="neutral", score=0.9), "AAPL", ["AAPL"], "contradicts sentiment neutral"),
    (A(sentiment="bullish"), "AAPL", ["AAPL"], "schema: sentiment"),
    (A(confidence=1), "AAPL", ["AAPL"], "Extra inputs are not permitted"),
    (A(reasoning="x" * 401), "AAPL", ["AAPL"], "at most 400 characters"),
    ('{"ticker": "AAPL", "sentiment": "pos', "AAPL", ["AAPL"], "not JSON"),
    ("I think it is bullish", "AAPL", ["AAPL"], "not JSON"),
    ("", "AAPL", ["AAPL"], "empty answer"),
    ("Sure! " + A() + " Hope this helps.", "AAPL", ["AAPL"], None),  # prose around one object is tolerated
    # named targets: the ticker is the name's symbol (company table) or null; a written target must be the asked one
    (A(target="Apple"), "Apple", [], None),
    (A(ticker=None, target="Royal Mail"), "Royal Mail", [], None),
    (A(ticker=None), "Royal Mail", [], None),  # no target key (a v1-style answer): the asked target is filled in
    (A(target="Microsoft"), "Apple", [], "target: the question is about Apple, the answer names Microsoft"),
    (A(ticker=None, target="Apple"), "Apple", [], "ticker: the question is about AAPL, the answer names None"),
    (A(target="Royal Mail"), "Royal Mail", [], "AAPL is not mentioned in the post (expected null)"),
    (A(target="AAPL"), "$aapl", ["AAPL"], None),
]


@pytest.mark.parametrize("content,target,tickers,expected", CHECK_CASES)
def test_check_answer(content, target, tickers, expected):
    ans, reason = check_answer(content, target, tickers)
    if expected is None:
        assert isinstance(ans, SentimentAnswer) and reason is None
        assert (ans.target, ans.ticker) == resolve_target(target)
    else:
        assert ans is None and expected in reason


def test_schema_for_narrows_target_and_ticker_and_stays_strict_compatible():
    s = schema_for("$aapl")
    assert s["properties"]["target"] == s["properties"]["ticker"] == {"type": "string", "enum": ["AAPL"]}
    assert schema_for(None)["properties"]["ticker"] == schema_for(None)["properties"]["target"] == {"type": "null"}
    named = schema_for("Johnson & Johnson")["properties"]
    assert named["target"] == {"type": "string", "enum": ["Johnson & Johnson"]}
    assert named["ticker"] == {"type": "string", "enum": ["JNJ"]}
    assert schema_for("Brent crude")["properties"]["ticker"] == {"type": "null"}
    assert list(s["properties"]) == ["target", "ticker", "sentiment", "score", "reasoning"]
    assert s["additionalProperties"] is False and set(s["required"]) == set(s["properties"])
    assert "maxLength" not in json.dumps(s) and "pattern" not in json.dumps(s)


def test_retry_after_and_prices():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after({"retry-after": http_date}) <= 31
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
    assert known_prices("gpt-4o-mini") == (0.15, 0.60)
    assert known_prices("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert known_prices("gpt-4o") == (2.50, 10.00)
    assert known_prices("smollm2-135m") is None


def test_token_bucket_limits_rate():
    async def go() -> float:
        bucket = TokenBucket(rpm=600)  # 10/s, burst 10
        t0 = time.monotonic()
        for _ in range(25):
            await bucket.acquire()
        return time.monotonic() - t0

    took = asyncio.run(go())
    assert 1.3 <= took < 3.0  # 10 free, then 15 at 10/s


def test_gold_teacher_scores_and_template():
    async def go():
        g = GoldTeacher()
        return [
            await g.label(Item("1", "$AAPL beats", "AAPL", ["AAPL"], "positive", None)),
            await g.label(Item("2", "Royal Mail chairman to step down", None, [], "negative", -0.374)),
            await g.label(Item("3", "odd", None, [], "positive", -0.2)),  # contradicting score: label's default
            await g.label(Item("4", "no gold", None, [], None, None)),
        ]

    a, b, c, d = asyncio.run(go())
    assert a.status == "ok" and a.answer == {"target": "AAPL", "ticker": "AAPL", "sentiment": "positive", "score": 0.7,
                                             "reasoning": "Template (gold raw label, no model reasoning): positive for $AAPL."}
    assert a.reasoning_source == "template"
    assert b.answer["score"] == -0.37 and b.answer["ticker"] is None
    assert c.answer["score"] == 0.7
    assert d.status == "rejected" and "no gold label" in d.reason


def _label_all(server: TeacherServer, items: list[Item], **kw) -> tuple[list, OpenAITeacher]:
    async def go():
        t = OpenAITeacher(server.url, "gold-echo", "k", **{"timeout": 0.6, "backoff_base": 0.05, **kw})
        try:
            return await asyncio.gather(*(t.label(it) for it in items)), t
        finally:
            await t.aclose()

    return asyncio.run(go())


def _items(gold: dict[str, str], n: int, offset: int = 0) -> list[Item]:
    from tickerpulse.task.tickers import extract_tickers

    texts = list(gold)[offset : offset + n]
    out = []
    for i, text in enumerate(texts):
        tickers = extract_tickers(text)
        out.append(Item(str(i), text, tickers[0] if tickers else None, tickers, gold[text]))
    return out


def test_faults_are_retried_then_reported(teacher_server, tfns_gold):
    """Every fault kind over real HTTP: transient ones are retried to success, persistent invalid answers
    are rejected with the reason, nothing invalid comes back as ok."""
    st = teacher_server.state
    st.slow_seconds = 2.0
    items = _items(tfns_gold, 12)
    plans = {
        0: ["429", "ok"], 1: ["500", "500", "ok"], 2: ["slow", "ok"], 3: ["malformed", "ok"],
        4: ["out_of_range", "ok"], 5: ["contradiction", "ok"], 6: ["wrong_ticker", "ok"], 7: ["extra_key", "ok"],
        8: ["prose", "prose", "prose"], 9: ["out_of_range", "contradiction", "malformed"],
        10: ["500"] * 10,
    }
    st.set_faults({items[i].text: p for i, p in plans.items()})
    outs, _ = _label_all(teacher_server, items, max_retries=3, max_invalid=3)
    by = {int(it.id): o for it, o in zip(items, outs)}
    for i in (0, 1, 2, 3, 4, 5, 6, 7, 11):
        assert by[i].status == "ok", (i, by[i].reason)
        SentimentAnswer.model_validate(by[i].answer)
        assert by[i].answer["sentiment"] == items[i].gold_label
        assert by[i].answer["ticker"] == items[i].target
    assert by[0].retries["429"] == 1 and by[1].retries["5xx"] == 2 and by[2].retries["timeout"] == 1
    for i in (3, 4, 5, 6, 7):
        assert by[i].retries["invalid_answer"] == 1 and by[i].attempts == 2
    assert by[8].status == "rejected" and "not JSON" in by[8].reason and "after 3 answers" in by[8].reason
    assert by[9].status == "rejected" and by[9].answer is None
    assert by[10].status == "failed" and "gave up after 4 attempts: HTTP 500" in by[10].reason
    # Retry-After honoured: the retry of text 0 came at least retry_after (0.3 s) after the 429
    t = st.arrivals[items[0].text]
    assert len(t) == 2 and t[1] - t[0] >= 0.3 * 0.95
    # the feedback conversation reached the server: the second request of text 3 carried the error
    assert st.received[items[3].text] == 2
    # token accounting covers every request
    assert all(o.prompt_tokens > 0 and o.completion_tokens > 0 for o in outs if o.status == "ok")


def test_response_format_falls_back_when_json_schema_is_rejected(teacher_server, tfns_gold):
    teacher_server.state.json_schema = False
    items = _items(tfns_gold, 6)
    outs, t = _label_all(teacher_server, items)
    assert all(o.status == "ok" and o.response_format == "json_object" for o in outs)
    assert t.mode == 1 and t.format_fallbacks  # later requests start at json_object
    assert teacher_server.state.formats["json_object"] == 6 and "json_schema" not in teacher_server.state.formats


def test_json_schema_is_requested_when_supported(teacher_server, tfns_gold):
    outs, t = _label_all(teacher_server, _items(tfns_gold, 3))
    assert [o.response_format for o in outs] == ["json_schema"] * 3 and not t.format_fallbacks


def test_wrong_key_and_unknown_model_abort(tfns_gold):
    st = TeacherState(gold=tfns_gold, api_key="right", strict_model=True)
    with TeacherServer(st) as server:
        item = _items(tfns_gold, 1)
        with pytest.raises(TeacherError, match="refused the API key"):
            _label_all(server, item)
        with pytest.raises(TeacherError, match="not found"):
            async def go():
                t = OpenAITeacher(server.url, "no-such-model", "right")
                try:
                    return await t.label(item[0])
                finally:
                    await t.aclose()
            asyncio.run(go())


def test_connection_refused_fails_after_retries():
    from tests.conftest import free_port

    async def go():
        t = OpenAITeacher(f"http://127.0.0.1:{free_port()}/v1", "m", "k", max_retries=2, backoff_base=0.01)
        try:
            return await t.label(Item("1", "text", None, []))
        finally:
            await t.aclose()

    out = asyncio.run(go())
    assert out.status == "failed" and out.retries["connection"] == 3 and "connection error" in out.reason
