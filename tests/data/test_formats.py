"""The three mlx-lm data formats: case tables of valid and broken rows, and `tickerpulse data validate`
through the real CLI (`file:line: reason`, non-zero exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.data.formats import (
    DataError,
    check_row,
    detect_format,
    load_jsonl,
    load_split,
    validate_file,
)

CHAT = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                     {"role": "assistant", "content": "a"}]}
CHAT_TOOLS = {"messages": [{"role": "user", "content": "weather?"},
                           {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w"}}]},
                           {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}],
              "tools": [{"type": "function", "function": {"name": "w"}}]}
COMPLETION = {"prompt": "2+2=", "completion": "4"}
TEXT = {"text": "Once upon a time."}

# (row, expected format) for rows that must pass
VALID = [
    (CHAT, "chat"),
    (CHAT_TOOLS, "chat"),
    ({**CHAT, "id": "x", "meta": {"source": "t"}}, "chat"),  # extra keys are fine
    (COMPLETION, "completions"),
    ({"prompt": "", "completion": "x"}, "completions"),  # an empty prompt is allowed
    (TEXT, "text"),
]

# (row, format the file started in, substring of the reason)
BROKEN = [
    ({"messages": []}, "chat", "'messages' must be a non-empty list"),
    ({"messages": "hi"}, "chat", "'messages' must be a non-empty list"),
    ({"messages": ["hi"]}, "chat", "messages[0] must be an object"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "chat", "messages[0].role 'bot'"),
    ({"messages": [{"role": "user"}]}, "chat", "messages[0] (user) has no 'content'"),
    ({"messages": [{"role": "user", "content": 3}]}, "chat", "messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "chat", "no assistant message"),
    ({**CHAT, "tools": {"a": 1}}, "chat", "'tools' must be a list"),
    ({"prompt": "x"}, "completions", "'completion' must be a string"),
    ({"prompt": 1, "completion": "x"}, "completions", "'prompt' must be a string"),
    ({"prompt": "x", "completion": ""}, "completions", "'completion' is empty"),
    ({"text": ""}, "text", "'text' must be a non-empty string"),
    ({"text": 5}, "text", "'text' must be a non-empty string"),
    (TEXT, "chat", "row is in text format but the file started as chat"),
    ({"input": "x", "output": "y"}, "chat", "unknown format"),
    ([1, 2], "chat", "expected a JSON object"),
]


@pytest.mark.parametrize("row,fmt", VALID)
def test_valid_rows(row, fmt):
    assert detect_format(row) == fmt
    check_row(row, fmt)


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("row,start_fmt,reason", BROKEN)
def test_broken_row_names_file_line_reason(tmp_path, row, start_fmt, reason):
    good = {"chat": CHAT, "completions": COMPLETION, "text": TEXT}[start_fmt]
    path = write_jsonl(tmp_path / "train.jsonl", [good] * 16 + [row] + [good] * 3)  # the bad row is line 17
    with pytest.raises(DataError) as exc:
        load_jsonl(path)
    assert str(exc.value).startswith("train.jsonl:17: ")
    assert reason in str(exc.value)
    report = validate_file(path)
    assert report.rows == 19 and len(report.errors) == 1 and report.errors[0].startswith("train.jsonl:17: ")


@pytest.mark.parametrize("raw,reason", [
    (b'{"text": "a"', "invalid JSON"),
    (b'{"text": "caf\xe9"}', "not UTF-8"),
])
def test_unparsable_lines(tmp_path, raw, reason):
    path = tmp_path / "valid.jsonl"
    path.write_bytes(b'{"text": "ok"}\n\n' + raw + b'\n{"text": "ok"}\n{"oops": 1}\n')
    report = validate_file(path)
    assert report.errors[0].startswith(f"valid.jsonl:3: {reason}")
    assert any(e.startswith("valid.jsonl:5: unknown format") for e in report.errors)  # keeps scanning after line 3


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="test.jsonl:0: file is empty"):
        load_jsonl(path)


def test_load_split_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs valid.jsonl"):
        load_split(tmp_path, "valid")


runner = CliRunner()


@pytest.mark.parametrize("row", [CHAT, COMPLETION, TEXT], ids=["chat", "completions", "text"])
def test_cli_validate_passes_valid_folders(tmp_path, row):
    for split in ("train", "valid", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", [row] * 5)
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fmt = detect_format(row)
    assert result.output.count(f"5 valid rows, format {fmt}") == 3


def test_cli_validate_real_process_reports_file_line(tmp_path):
    """The installed console script: each broken row on stderr as file:line: reason, exit code 2."""
    write_jsonl(tmp_path / "train.jsonl", [CHAT] * 16 + [{"messages": [{"role": "user", "content": "q"}]}] + [CHAT])
    write_jsonl(tmp_path / "valid.jsonl", [CHAT] * 2)
    exe = Path(sys.executable).with_name("tickerpulse")
    proc = subprocess.run([str(exe), "data", "validate", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 2
    assert "train.jsonl:17: no assistant message: nothing to train on" in proc.stderr
    assert "ok valid.jsonl" in proc.stdout and "FAIL train.jsonl" in proc.stdout


def test_cli_validate_empty_folder(tmp_path):
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 2 and "no train/valid/test.jsonl" in result.output
