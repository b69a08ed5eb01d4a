"""Bad records never stop the stream (issue #26): each finding rerun as it was reported, then generated
hostile records (hypothesis) thrown at the real processor (SQLite bus + DuckDB store + VADER) and at the
replay source. Every good post is stored exactly once, every bad record is a dead letter with its reason
(or a `file:line: reason` warning in a replay), offsets are committed, nothing crashes."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.processor import run_processor
from tickerpulse.stream.produce import run_source
from tickerpulse.stream.schema import MAX_FUTURE_S, Post
from tickerpulse.stream.scoring import VaderScorer
from tickerpulse.stream.sources.replay import ReplaySource
from tickerpulse.stream.store.duckdb import DuckDBStore

TOPIC = "financial_raw_text"
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMD", "INTC", "AMZN", "META", "NFLX", "ORCL"]
# The four records of the report: each stopped `stream process` with an exception (OverflowError, ValueError).
REPORTED_BAD = [
    b'{"id": "b1", "source": "t", "text": "$GME up", "created_at": 1e19}',
    b'{"id": "b2", "source": "t", "text": "$GME up", "created_at": "inf"}',
    b'{"id": "b3", "source": "t", "text": "$GME up", "created_at": "0001-01-01T00:00:00+05:00"}',
    b'{"id": "b4", "source": "t", "text": "$GME up", "created_at": 1700000000, "raw": {"n": ' + b"9" * 5000 + b"}}",
]


def tp(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def good_post(i: int, text: str | None = None, created_at: float | str | None = None) -> Post:
    return Post(id=f"good-{i}", source="test", text=text or f"${SYMBOLS[i % len(SYMBOLS)]} beats estimates, great quarter",
                created_at=time.time() if created_at is None else created_at)


def test_reported_bad_records_do_not_stop_stream_process(tmp_path: Path) -> None:
    """10 good posts and the 4 reported records, `stream process --scorer vader --until-idle 3`, twice."""
    d = tmp_path / "stream"
    bus = SqliteBus(d / "bus.sqlite")
    for i in range(10):
        bus.produce(TOPIC, f"good-{i}", good_post(i).to_bytes())
        if i in (1, 3, 5, 7):
            bus.produce(TOPIC, None, REPORTED_BAD[i // 2])
    bus.close()
    for _ in range(2):  # the second run finds everything committed: nothing new, still exit 0
        proc = tp("stream", "process", "--dir", str(d), "--scorer", "vader", "--until-idle", "3")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    store = DuckDBStore(d / "store.duckdb", read_only=True)
    ids = store.doc_ids()
    assert len(ids) == len(set(ids)) == 10 and store.counts()["posts"] == 10
    dead = store.dead_letters(10)
    assert len(dead) == 4 and all(x.stage == "parse" and x.reason for x in dead)
    reasons = " | ".join(sorted(x.reason for x in dead))
    assert "timestamp out of range: 1e+19" in reasons and "not a finite number" in reasons
    assert "'0001-01-01T00:00:00+05:00'" in reasons and "4300 digits" in reasons
    assert sorted(x.raw_payload() for x in dead) == sorted(REPORTED_BAD)  # whole, not cut to 2 KB
    bus = SqliteBus(d / "bus.sqlite")
    assert bus.committed("tickerpulse-processor", TOPIC) == bus.end_offsets(TOPIC)
    assert bus.count(f"{TOPIC}.dlq") == 4
    bus.close()


def test_stream_run_does_not_crash_loop_on_bad_records_in_the_log(tmp_path: Path) -> None:
    """The reported records already on the bus (another producer put them there), then `stream run`: it
    used to restart its processor 5 times on the first of them and give up, with every later post stuck."""
    d = tmp_path / "stream"
    bus = SqliteBus(d / "bus.sqlite")
    for v in REPORTED_BAD:
        bus.produce(TOPIC, None, v)
    bus.close()
    f = tmp_path / "posts.jsonl"
    f.write_text("".join(json.dumps({"id": f"r{i}", "text": f"${s} rallies"}) + "\n" for i, s in enumerate(SYMBOLS)))
    proc = tp("stream", "run", "--file", str(f), "--speed", "0", "--no-dashboard", "--exit-when-done",
              "--scorer", "vader", "--dir", str(d))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "restart" not in out.lower(), out[-3000:]
    store = DuckDBStore(d / "store.duckdb", read_only=True)
    assert store.counts()["docs"] == len(SYMBOLS) and store.counts()["dead_letters"] == 4


def test_reported_bad_replay_rows_are_skipped_by_stream_run(tmp_path: Path) -> None:
    """A JSONL file whose second row has `created_at: 1e19`, and a CSV with one non-UTF-8 byte, given to
    `stream run --file F --speed 0 --no-dashboard --exit-when-done`: the good rows go through."""
    jsonl = tmp_path / "posts.jsonl"
    rows = [{"id": "j1", "text": "$AAPL beats", "created_at": time.time()},
            {"id": "j2", "text": "$MSFT misses", "created_at": 1e19},
            {"id": "j3", "text": "$NVDA great quarter", "created_at": time.time()}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_file = tmp_path / "posts.csv"
    csv_file.write_bytes(b"id,text\nc1,$TSLA up big\nc2,$AMD caf\xe9 down\nc3,$INTC flat\n")
    for f, want in ((jsonl, {"j1", "j3"}), (csv_file, {"c1", "c2", "c3"})):
        d = tmp_path / f"stream-{f.suffix[1:]}"
        proc = tp("stream", "run", "--file", str(f), "--speed", "0", "--no-dashboard", "--exit-when-done",
                  "--scorer", "vader", "--dir", str(d))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        store = DuckDBStore(d / "store.duckdb", read_only=True)
        assert {x.post_id for x in store.latest(20)} == want and store.counts()["dead_letters"] == 0
        if f is jsonl:
            assert "posts.jsonl:2: skipped (created_at: " in out and "out of range" in out
        else:  # the byte became U+FFFD; the row was kept
            assert "\ufffd" in next(x.text for x in store.latest(20) if x.post_id == "c2")


def test_a_post_dated_2099_does_not_take_over_the_window(tmp_path: Path) -> None:
    cfg = StreamConfig(dir=tmp_path, scorer="vader", max_records=16, poll_timeout=0.05)
    bus = SqliteBus(cfg.bus_path)
    for i in range(50):
        bus.produce(TOPIC, None, good_post(i).to_bytes())
    bus.produce(TOPIC, None, Post(id="future", source="test", text="$GME to the moon",
                                  created_at="2099-01-01T00:00:00Z").to_bytes())
    bus.flush()
    before = datetime.now(timezone.utc)
    run_processor(cfg, until_idle=0.3, scorer=VaderScorer(), bus=bus)
    bus.close()
    store = DuckDBStore(cfg.db, read_only=True)
    stats = {s.ticker: s.mentions for s in store.ticker_stats(window_s=3600, limit=50)}
    assert stats == {**{s: 5 for s in SYMBOLS}, "GME": 1}  # the 50 real posts are all in the window
    (future,) = store.latest(1, ticker="GME")
    assert before <= future.timestamp <= datetime.now(timezone.utc) + timedelta(seconds=MAX_FUTURE_S)
    assert future.timestamp <= future.ingested_at + timedelta(seconds=MAX_FUTURE_S)


# -- generated hostile records ---------------------------------------------------------------------------

def _obj(created_at: str = "1714564800", extra: str = "", **fields: str) -> bytes:
    base = {"id": '"bad"', "source": '"t"', "text": '"$GME x"', "created_at": created_at, **fields}
    body = ", ".join(f'"{k}": {v}' for k, v in base.items() if v is not None)
    return ("{" + body + extra + "}").encode("utf-8", "surrogatepass")


BAD_TIMESTAMPS = st.one_of(
    st.sampled_from(["1e19", "-1e19", "1e400", "NaN", "Infinity", "-Infinity", '"inf"', '"-inf"', '"nan"', '"1e309"',
                     '"0001-01-01T00:00:00+05:00"', '"9999-12-31T23:59:59-05:00"', '"2024-13-01"', '"2024-02-30"',
                     '""', '"   "', '"yesterday"', "true", "null", "[]", "{}", '"12:00"']),
    st.integers(min_value=4301, max_value=6000).map(lambda n: "9" * n),  # > Python's 4300-digit limit
    st.floats(min_value=3e11, max_value=1e308).map(repr),  # past year 9999
    st.floats(min_value=-1e308, max_value=-7e10).map(repr),  # before year 1
)
WRONG_TYPES = st.sampled_from([
    {"id": "7"}, {"id": "[1]"}, {"id": '""'}, {"id": None}, {"text": "42"}, {"text": '["$AAPL"]'}, {"text": None},
    {"source": None}, {"source": "{}"}, {"author": "3.5"}, {"url": "[]"}, {"text": '"a\\u0000b"'},
    {"text": '"\\ud800 lone surrogate"'}, {"id": '"' + "i" * 300 + '"'}, {"text": '"' + "x" * 40_001 + '"'},
])
HOSTILE = st.one_of(
    st.binary(max_size=300).filter(lambda b: not b.strip().startswith(b"{")),  # random bytes
    st.binary(min_size=1, max_size=40).map(lambda b: b'{"id": "bad", "text": "' + b"\xff" + b + b'"}'),  # not UTF-8
    BAD_TIMESTAMPS.map(lambda t: _obj(created_at=t)),
    st.integers(min_value=4301, max_value=8000).map(lambda n: _obj(extra=', "raw": {"n": ' + "1" * n + "}")),
    st.integers(min_value=2000, max_value=20_000).map(lambda n: _obj(extra=', "raw": {"a": ' + "[" * n + "]" * n + "}")),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]).map(lambda v: _obj(extra=f', "raw": {{"v": {v}}}')),
    WRONG_TYPES.map(lambda f: _obj(**f)),
    st.sampled_from(["id", "source", "text", "created_at"]).map(lambda k: _obj(**{k: None})),  # missing field
    st.sampled_from([b"[]", b"null", b"42", b'"text"', b"", b"{", b'{"id": "x",}', b"\x00" * 20]),
    st.integers(min_value=129 * 1024, max_value=300 * 1024).map(lambda n: _obj(text='"' + "y" * n + '"')),
)
GOOD_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Lu"), blacklist_characters="$:\x00"), max_size=120)
GOOD_TIME = st.one_of(
    st.floats(min_value=-6e10, max_value=2.5e11),  # any epoch second from year 70 to 9891 (far future: clamped)
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1),
                 timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]))
    .map(lambda dt: dt.isoformat()),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], list[bool]]:
    """A shuffled mix of good posts (one `$AAPL`-style cashtag each, unique ids) and hostile records."""
    n_good = draw(st.integers(1, 12))
    good = [json.dumps({"id": f"good-{i}", "source": "test", "created_at": draw(GOOD_TIME),
                        "text": f"${SYMBOLS[i % len(SYMBOLS)]} {draw(GOOD_TEXT)}"}, ensure_ascii=draw(st.booleans()))
            .encode("utf-8") for i in range(n_good)]
    bad = draw(st.lists(HOSTILE, min_size=1, max_size=10))
    tagged = [(g, True) for g in good] + [(b, False) for b in bad]
    order = draw(st.permutations(range(len(tagged))))
    return [tagged[i][0] for i in order], [tagged[i][1] for i in order]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
def test_processor_survives_generated_hostile_records(stream: tuple[list[bytes], list[bool]]) -> None:
    values, is_good = stream
    with tempfile.TemporaryDirectory(prefix="tp-hostile-") as tmp:
        cfg = StreamConfig(dir=Path(tmp), scorer="vader", max_records=7, poll_timeout=0.02)
        bus, store = SqliteBus(cfg.bus_path), DuckDBStore(cfg.db, persistent=True)
        try:
            for v in values:
                bus.produce(cfg.topic, None, v)
            bus.flush()
            totals = run_processor(cfg, until_idle=0.1, scorer=VaderScorer(), bus=bus, store=store)
            n_good, n_bad = sum(is_good), len(is_good) - sum(is_good)
            assert totals["records"] == len(values) and totals["dead_letters"] == n_bad
            ids = store.doc_ids()
            assert len(ids) == len(set(ids)) == n_good  # every good post once (one cashtag each)
            assert sorted(d.post_id for d in store.latest(100)) == sorted(f"good-{i}" for i in range(n_good))
            dead = store.dead_letters(100)
            assert len(dead) == n_bad and all(d.stage == "parse" and d.reason and d.code for d in dead)
            bad_values = sorted(v[: cfg.max_post_bytes] for v, ok in zip(values, is_good) if not ok)
            assert sorted(d.raw_payload() for d in dead) == bad_values  # kept whole (cut only over the limit)
            assert bus.count(cfg.dead_letter_topic) == n_bad
            assert bus.committed(cfg.group, cfg.topic) == bus.end_offsets(cfg.topic)
            for d in store.latest(100):  # event time never past ingest + tolerance
                assert d.timestamp <= d.ingested_at + timedelta(seconds=cfg.max_future_s)
        finally:
            store.close()
            bus.close()


# -- the replay source -------------------------------------------------------------------------------------

BAD_LINES = st.one_of(
    st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" "))
    .filter(lambda b: b.decode("utf-8", "replace").strip() != ""),
    BAD_TIMESTAMPS.filter(lambda t: t not in ('""', "null"))  # replay reads an empty/null time as "none given"
    .map(lambda t: f'{{"id": "bad", "text": "$GME", "created_at": {t}}}'.encode()),
    st.integers(min_value=4301, max_value=6000).map(lambda n: b'{"id": "bad", "text": "x", "n": ' + b"7" * n + b"}"),
    st.integers(min_value=2000, max_value=20_000).map(lambda n: b'{"text": ' + b"[" * n + b"]" * n + b"}"),
    st.sampled_from([b"[1, 2]", b"null", b'"just text"', b'{"id": "no-text"}', b'{"text": ""}', b"{broken",
                     b'{"text": "x", "author": {"a": 1}}', b'{"text": "x", "created_at": NaN}']),
)


@st.composite
def replay_files(draw: st.DrawFn) -> tuple[bytes, set[str], int]:
    """JSONL bytes: good rows (some with invalid UTF-8 inside the text) and bad lines, shuffled; returns
    (file, good ids, bad lines)."""
    n_good = draw(st.integers(1, 10))
    good: list[bytes] = []
    for i in range(n_good):
        row = json.dumps({"id": f"r{i}", "text": f"$AAPL {draw(GOOD_TEXT)}", "created_at": draw(GOOD_TIME)}).encode()
        if draw(st.booleans()):  # a raw \xff inside the text value: becomes U+FFFD, the row is kept
            row = row.replace(b'"$AAPL ', b'"$AAPL \xff', 1)
        good.append(row)
    bad = draw(st.lists(BAD_LINES, min_size=1, max_size=8))
    lines = good + bad
    order = draw(st.permutations(range(len(lines))))
    return b"\n".join(lines[i] for i in order) + b"\n", {f"r{i}" for i in range(n_good)}, len(bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(replay_files())
def test_replay_skips_generated_bad_rows_and_produces_the_good_ones(case: tuple[bytes, set[str], int]) -> None:
    data, good_ids, n_bad = case
    with tempfile.TemporaryDirectory(prefix="tp-replay-") as tmp:
        f = Path(tmp) / "posts.jsonl"
        f.write_bytes(data)
        src = ReplaySource(f, speed=0)
        posts = list(src.iter_posts())
        assert {p.id for p in posts} == good_ids and src.skipped == n_bad
        bus = SqliteBus(Path(tmp) / "bus.sqlite")
        stats = run_source(posts, bus, TOPIC)
        assert stats.produced == len(good_ids) and bus.count(TOPIC) == len(good_ids)
        bus.close()


CSV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=80)
BAD_CSV_TIMES = st.sampled_from(["1e19", "-1e19", "inf", "nan", "0001-01-01T00:00:00+05:00", "2024-13-01", "yesterday",
                                 "9" * 5000, "   "])


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, set[str], int]:
    """CSV bytes (quotes, commas, newlines inside cells; raw \xff bytes) with good rows and rows whose
    timestamp or size is bad; returns (file, good ids, bad rows)."""
    import io

    rows: list[tuple[str, str, str, bool]] = []
    for i in range(draw(st.integers(1, 8))):
        rows.append((f"c{i}", "$AAPL " + draw(CSV_TEXT), draw(GOOD_TIME.map(str)), True))
    for i in range(draw(st.integers(1, 6))):
        big = draw(st.booleans())
        rows.append((f"x{i}", "z" * (csv.field_size_limit() + 1) if big else "$GME x", "1" if big else draw(BAD_CSV_TIMES),
                     False))
    order = draw(st.permutations(range(len(rows))))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["id", "text", "created_at"])
    for k in order:
        writer.writerow(rows[k][:3])
    data = buf.getvalue().encode("utf-8")
    if draw(st.booleans()):  # a raw non-UTF-8 byte right after a cashtag: U+FFFD, the row is kept
        data = data.replace(b"$AAPL ", b"$AAPL \xff", 1)
    return data, {r[0] for r in rows if r[3]}, sum(not r[3] for r in rows)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(csv_files())
def test_replay_csv_skips_generated_bad_rows(case: tuple[bytes, set[str], int]) -> None:
    data, good_ids, n_bad = case
    with tempfile.TemporaryDirectory(prefix="tp-csv-") as tmp:
        f = Path(tmp) / "posts.csv"
        f.write_bytes(data)
        src = ReplaySource(f, speed=0)
        assert {p.id for p in src.iter_posts()} == good_ids and src.skipped == n_bad


def test_replay_csv_with_bad_bytes_huge_fields_and_bad_timestamps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "posts.csv"
    big = "z" * (csv.field_size_limit() + 10)
    f.write_bytes(b"id,text,created_at\n"
                  b"c1,$TSLA caf\xe9 \xff up,1714564800\n"
                  b"c2,too big," + big.encode() + b"\n"
                  b"c3,$AMD down,1e19\n"
                  b"c4,$INTC ok,nan\n"
                  b'c5,"$NVDA multi\nline",2024-05-01T12:00:00Z\n'
                  b"c6,$AAPL last,\n")
    src = ReplaySource(f, speed=0)
    posts = {p.id: p for p in src.iter_posts()}
    assert set(posts) == {"c1", "c5", "c6"} and src.skipped == 3
    assert "\ufffd" in posts["c1"].text and posts["c5"].text == "$NVDA multi\nline"
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert "posts.csv:3: skipped (bad CSV: field larger than field limit" in warned
    assert "posts.csv:4: skipped (created_at: " in warned and "posts.csv:5: skipped (created_at: " in warned


def test_replay_skips_a_line_longer_than_the_limit_in_bounded_memory(tmp_path: Path) -> None:
    from tickerpulse.stream.sources.replay import MAX_LINE_BYTES

    f = tmp_path / "posts.jsonl"
    with f.open("wb") as fh:
        fh.write(b'{"id": "a", "text": "$AAPL first"}\n{"id": "huge", "text": "')
        fh.write(b"h" * (3 * MAX_LINE_BYTES))
        fh.write(b'"}\n{"id": "b", "text": "$MSFT after"}\n')
    src = ReplaySource(f, speed=0)
    assert [p.id for p in src.iter_posts()] == ["a", "b"] and src.skipped == 1


def test_dead_letter_payload_survives_the_dlq_topic_byte_for_byte() -> None:
    """The DLQ record is JSON: a non-UTF-8 payload travels as base64 and comes back exact."""
    from tickerpulse.stream.schema import DeadLetter

    raw = b'{"id": "x", "text": "\xff\xfe\x00"}'
    d = DeadLetter.build(raw, stage="parse", code="not_utf8", reason="r", topic="t", partition=0, offset=1)
    assert d.payload == base64.b64encode(raw).decode()
    assert DeadLetter.model_validate(json.loads(json.dumps(d.to_dict()))).raw_payload() == raw
