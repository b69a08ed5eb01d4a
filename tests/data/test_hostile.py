"""Hostile data files never make `data validate|convert|split|stats` trace back (issue #26).

Every bad input ends as `file:line: reason` and exit 2, in bounded memory: the findings reproduced on main
as explicit cases through the installed console script, then hypothesis-generated files (random bytes,
mixed valid/invalid rows, deep nesting, huge numbers, NaN, wrong types, long fields, other encodings, BOMs)
through the same `run_app` path in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerpulse.data import formats
from tickerpulse.data.formats import DataError, iter_jsonl, load_jsonl, validate_file
from tickerpulse.data.readers import read_records

from .cli import assert_file_line_errors, run_cli
from .hostile_files import CHAT, GOOD, JSONL_FILES, csv_file


def _script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("tickerpulse")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "2000"})


# ------------------------------------------------------------------------------------------ the findings

FINDINGS = {
    "non-utf8.csv": (b"text,label\nfine,positive\nhello \xff world,positive\n", "non-utf8.csv:3: not UTF-8 (byte 0xff"),
    "long-field.csv": (b"text,label\n" + b"a" * 140_000 + b",positive\n",
                       "long-field.csv:2: CSV field longer than 131,072 characters"),
    "deep.jsonl": (json.dumps(GOOD).encode() + b"\n" + b'{"text": "x", "label": "positive", "n": '
                   + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "deep.jsonl:2: invalid JSON: nested too deep"),
    "bigint.jsonl": (b'{"text": "x", "label": "positive", "score": ' + b"9" * 5000 + b"}\n",
                     "bigint.jsonl:1: invalid JSON: an integer has more than 4300 digits"),
}


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_convert_findings_are_file_line_errors_with_exit_2(tmp_path, name):
    """The four reproduced tracebacks of `data convert`, through the installed console script."""
    data, expected = FINDINGS[name]
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out.jsonl"
    proc = _script("data", "convert", src, "--to", "chat", "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == f"error: {expected}" or proc.stderr.startswith(f"error: {expected}"), proc.stderr
    assert not out.exists()  # a broken input leaves no half-written output


@pytest.mark.parametrize("name", ["deep.jsonl", "bigint.jsonl"])
def test_validate_and_split_report_the_same_findings(tmp_path, name):
    data, expected = FINDINGS[name]
    src = tmp_path / name
    src.write_bytes(data)
    res = run_cli("data", "validate", src)
    assert res.code == 2 and expected in res.stderr, res.output
    res = run_cli("data", "split", src, "--out", tmp_path / "s")
    assert res.code == 2 and res.stderr.startswith(f"error: {expected}"), res.output


@pytest.mark.parametrize("line,reason", [
    (b'{"text": "x", "label": "positive", "score": NaN}', "NaN is not a JSON value"),
    (b'{"text": "x", "label": "positive", "score": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"text": "x", "label": "positive", "score": 1e999}', "number 1e999 is out of range"),
    (b'{"text": "\\ud800 lone", "label": "positive"}', "lone surrogate"),
    (b'\xef\xbb\xbf{"text": "a BOM on a later line", "label": "positive"}', "a UTF-8 BOM starts the line"),
    (b'{"text": "caf\xe9", "label": "positive"}', "not UTF-8 (byte 0xe9 at column 14"),
    (b'["text", "label"]', "expected a JSON object, got list"),
    (b'{"text": 5, "label": "positive"}', "text must be a string, got int"),
    (b'{"text": "x", "label": ["positive"]}', "label must be a word or a number, got list"),
    (b'{"text": "x", "label": "positive", "score": "high"}', "score 'high' is not a number"),
    (b'{"text": "x", "label": "positive", "score": true}', "score must be a number, got bool"),
    (b'{"text": "x", "label": 7, "original_label": 7}', "tfns label 7 is not one of [0, 1, 2]"),
    (b'{"text": "x", "targets": [{"target": "A", "score": "nan"}]}', "target score nan is not a finite number"),
    (b'{"text": "x", "targets": "AAPL"}', "cannot tell the dataset from the fields ['targets', 'text']"),
    (b'{"text": "x", "label": "positive", "tickers": "AAPL"}', "tickers must be a list"),
])
def test_convert_names_line_and_reason_for_each_kind_of_bad_row(tmp_path, line, reason):
    src = tmp_path / "in.jsonl"
    src.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    res = run_cli("data", "convert", src, "--to", "records", "--out", tmp_path / "o.jsonl")
    assert res.code == 2, res.output
    assert res.stderr.startswith("error: in.jsonl:2: ") and reason in res.stderr, res.stderr


def test_bom_at_file_start_is_accepted_everywhere(tmp_path):
    """Windows editors write a BOM: JSONL and CSV files that start with one read normally."""
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert [r.text for r in read_records(src)] == [GOOD["text"]]
    chat = tmp_path / "chat.jsonl"
    chat.write_bytes(b"\xef\xbb\xbf" + json.dumps(CHAT).encode() + b"\n")
    assert load_jsonl(chat)[1] == "chat"
    csv_file = tmp_path / "bom.csv"
    csv_file.write_bytes("\ufefftext,label\nMarkets drift,neutral\n".encode())
    assert [r.label for r in read_records(csv_file)] == ["neutral"]


def test_empty_inputs_are_errors_not_empty_outputs(tmp_path):
    for name in ("empty.jsonl", "blank.jsonl", "empty.csv"):
        src = tmp_path / name
        src.write_text("" if name != "blank.jsonl" else "\n  \n")
        res = run_cli("data", "convert", src, "--to", "chat", "--out", tmp_path / "o.jsonl")
        assert res.code == 2 and f"{name}:0: " in res.stderr, res.output
        assert not (tmp_path / "o.jsonl").exists()
    res = run_cli("data", "split", tmp_path / "empty.jsonl", "--out", tmp_path / "s")
    assert res.code == 2 and "empty.jsonl:0: no rows to split" in res.stderr
    res = run_cli("data", "validate", tmp_path / "empty.jsonl")
    assert res.code == 2 and "empty.jsonl:0: file is empty" in res.stderr


def test_csv_errors_name_the_physical_line(tmp_path):
    """A quoted field spanning lines moves later line numbers; errors still point at the right line."""
    src = tmp_path / "multi.csv"
    src.write_text('text,label\n"two\nlines",positive\nok,positive\nbad,sideways\n')
    res = run_cli("data", "convert", src, "--to", "records", "--out", tmp_path / "o.jsonl")
    assert res.code == 2 and res.stderr.startswith("error: multi.csv:5: unknown label 'sideways'"), res.stderr
    src.write_text("text,label\nfine,positive\nshort\n")
    res = run_cli("data", "convert", src, "--to", "records", "--out", tmp_path / "o.jsonl")
    assert res.code == 2 and "multi.csv:3: no label and no score" in res.stderr, res.stderr
    src.write_bytes(b"text,label\nfine,positive\nnul \x00 byte,positive\n")
    res = run_cli("data", "convert", src, "--to", "records", "--out", tmp_path / "o.jsonl")
    assert res.code in (0, 2) and "Traceback" not in res.output


def test_a_line_over_the_limit_costs_bounded_memory_and_names_its_line(tmp_path, monkeypatch):
    """A 'line' of 3 MB with the limit at 1 MB: reported, skipped in chunks, the next line still read."""
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1 << 20)
    src = tmp_path / "big.jsonl"
    with open(src, "wb") as fh:
        fh.write(json.dumps(CHAT).encode() + b"\n" + b"x" * (3 << 20) + b"\n" + json.dumps(CHAT).encode() + b"\n")
    rep = validate_file(src)
    assert rep.rows == 2 and rep.errors == ["big.jsonl:2: line longer than 1,048,576 bytes (not a data row)"]
    with pytest.raises(DataError, match="big.jsonl:2: line longer"):
        list(iter_jsonl(src))


def test_a_line_exactly_at_the_limit_is_read(tmp_path, monkeypatch):
    row = json.dumps(CHAT).encode()
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", len(row))
    src = tmp_path / "edge.jsonl"
    src.write_bytes(row + b"\n" + row)  # the last line has no newline
    assert [n for n, _ in iter_jsonl(src)] == [1, 2]


def test_rich_markup_in_data_is_printed_verbatim(tmp_path):
    """Labels and texts are user data: '[/x]' in them must not be parsed as rich markup (MarkupError)."""
    src = tmp_path / "m.jsonl"
    src.write_text(json.dumps({"text": "odd [/x] text", "label": "[/bold]"}) + "\n")
    res = run_cli("data", "convert", src, "--to", "records", "--out", tmp_path / "o.jsonl")
    assert res.code == 2 and "unknown label '[/bold]'" in res.stderr, res.output
    res = run_cli("data", "split", src, "--out", tmp_path / "s")
    assert res.code == 0 and "[/bold] 1" in res.stdout, res.output


def test_stats_reports_a_broken_row_before_loading_any_tokenizer(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(CHAT) + "\n" + '{"messages": [NaN]}\n')
    res = run_cli("data", "stats", tmp_path, "--model", "no-such-model-needed")
    assert res.code == 2 and res.stderr.startswith("error: train.jsonl:2: invalid JSON: NaN"), res.output


# ---------------------------------------------------------------------------------------- property tests

_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="tp-hostile-")


@_SETTINGS
@given(data=JSONL_FILES, to=st.sampled_from(["records", "chat"]))
def test_property_convert_jsonl(data, to):
    with _folder() as d:
        src, out = Path(d) / "in.jsonl", Path(d) / "out.jsonl"
        src.write_bytes(data)
        res = run_cli("data", "convert", src, "--to", to, "--out", out)
        assert_file_line_errors(res, {"in.jsonl"})
        if res.code == 0 and to == "chat":  # what convert writes, our validator accepts
            assert validate_file(out).errors == []
        if res.code == 2:
            assert not out.exists()


@_SETTINGS
@given(file=csv_file(), to=st.sampled_from(["records", "chat"]))
def test_property_convert_csv(file, to):
    data, flags = file
    with _folder() as d:
        src, out = Path(d) / "in.csv", Path(d) / "out.jsonl"
        src.write_bytes(data)
        res = run_cli("data", "convert", src, "--to", to, "--out", out, *flags)
        assert_file_line_errors(res, {"in.csv"})
        if res.code == 0 and to == "chat":
            assert validate_file(out).errors == []


@_SETTINGS
@given(train=JSONL_FILES, valid=JSONL_FILES)
def test_property_validate(train, valid):
    with _folder() as d:
        (Path(d) / "train.jsonl").write_bytes(train)
        (Path(d) / "valid.jsonl").write_bytes(valid)
        res = run_cli("data", "validate", d)
        assert_file_line_errors(res, {"train.jsonl", "valid.jsonl"})
        assert res.code == (2 if validate_file(Path(d) / "train.jsonl").errors
                            or validate_file(Path(d) / "valid.jsonl").errors else 0)


@_SETTINGS
@given(data=JSONL_FILES)
def test_property_split(data):
    with _folder() as d:
        src = Path(d) / "in.jsonl"
        src.write_bytes(data)
        res = run_cli("data", "split", src, "--out", Path(d) / "s", "--valid", "0.2", "--test", "0.2")
        assert_file_line_errors(res, {"in.jsonl"})
        if res.code == 0:  # every row written parses again, and no row is lost
            written = [row for s in ("train", "valid", "test") if (Path(d) / "s" / f"{s}.jsonl").exists()
                       for _, row in iter_jsonl(Path(d) / "s" / f"{s}.jsonl")]
            assert len(written) == sum(1 for _ in iter_jsonl(src))


def test_unusable_paths_and_flags_are_one_line_errors(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "afile").write_text("")
    res = run_cli("data", "convert", src, "--to", "chat", "--out", tmp_path / "afile" / "o.jsonl")
    assert res.code == 2 and res.stderr.startswith("error: ") and "File exists" in res.stderr, res.output
    res = run_cli("data", "convert", tmp_path, "--to", "chat", "--out", tmp_path / "o.jsonl")
    assert res.code == 2 and "not found" in res.stderr, res.output
    res = run_cli("data", "convert", src, "--to", "chat", "--out", src)
    assert res.code != 0 and "would overwrite" in res.output and "Traceback" not in res.output
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("text,label\nup,positive\n")
    for flags, hint in [(["--delimiter", ";;"], "--delimiter"), (["--label-col", ""], "--label-col")]:
        res = run_cli("data", "convert", csv_file, "--to", "records", "--out", tmp_path / "o.jsonl", *flags)
        assert res.code == 2 and hint in res.output and "Traceback" not in res.output, res.output


def test_a_broken_line_3_is_reported_without_reading_the_rest(tmp_path):
    """Bounded memory: convert and split stop at the first broken row; validate streams a big file in
    constant memory (5 MB of rows after the broken one, traced peak far below the file size)."""
    import tracemalloc

    from tickerpulse.data.convert import convert
    from tickerpulse.data.split import split_files

    src = tmp_path / "big.jsonl"
    row = (json.dumps(GOOD) + "\n").encode()
    with open(src, "wb") as fh:
        fh.write(row * 2 + b'{"text": "x", "label": "positive", "score": NaN}\n' + row * (5_000_000 // len(row)))
    for run in (lambda: convert([src], "chat", tmp_path / "o.jsonl"), lambda: split_files([src], tmp_path / "s")):
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="big.jsonl:3: invalid JSON: NaN"):
                run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, peak
    tracemalloc.start()
    try:
        rep = validate_file(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep.errors == ["big.jsonl:3: invalid JSON: NaN is not a JSON value (use null or a number)"]
    assert rep.rows == 2 + 5_000_000 // len(row) and peak < 1_000_000, peak
