"""The three mlx-lm data formats, validated row by row with file:line errors.

- chat:        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...], "tools"?: [...]}
- completions: {"prompt": str, "completion": str}
- text:        {"text": str}

A folder holds train.jsonl / valid.jsonl / test.jsonl (any may be missing). All rows of one file must share
one format. Extra keys are allowed (ids, provenance) and ignored by training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Format = Literal["chat", "completions", "text"]
SPLITS = ("train", "valid", "test")
ROLES = {"system", "user", "assistant", "tool", "developer"}


class DataError(ValueError):
    """A broken row: the message is `file:line: reason`."""

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{Path(path).name}:{line}: {reason}")


def detect_format(row: Any) -> Format:
    """Which of the three formats a row is in; raises ValueError with what is wrong otherwise."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "completions"
    if "text" in row:
        return "text"
    keys = ", ".join(sorted(row)) or "none"
    raise ValueError(f"unknown format: need 'messages' (chat), 'prompt'+'completion' or 'text'; keys: {keys}")


def check_row(row: dict[str, Any], fmt: Format) -> None:
    """Raise ValueError describing the first problem of `row` in format `fmt`."""
    if fmt == "chat":
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise ValueError(f"messages[{i}] must be an object")
            role = m.get("role")
            if role not in ROLES:
                raise ValueError(f"messages[{i}].role {role!r} is not one of {sorted(ROLES)}")
            content = m.get("content")
            if content is None and not m.get("tool_calls"):
                raise ValueError(f"messages[{i}] ({role}) has no 'content'")
            if content is not None and not isinstance(content, str):
                raise ValueError(f"messages[{i}].content must be a string, got {type(content).__name__}")
        if not any(m.get("role") == "assistant" for m in msgs):
            raise ValueError("no assistant message: nothing to train on")
        if "tools" in row and not isinstance(row["tools"], list):
            raise ValueError("'tools' must be a list")
    elif fmt == "completions":
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"'{key}' must be a string (got {type(row.get(key)).__name__})")
        if not row["completion"]:
            raise ValueError("'completion' is empty: nothing to train on")
    else:
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ValueError("'text' must be a non-empty string")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, parsed_object) for non-blank lines; DataError names file and line."""
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None


def load_jsonl(path: str | Path, fmt: Format | None = None) -> tuple[list[dict[str, Any]], Format]:
    """Load and validate one JSONL file; returns (rows, format). Raises DataError on the first bad row."""
    rows: list[dict[str, Any]] = []
    for lineno, row in iter_jsonl(path):
        try:
            row_fmt = detect_format(row)
            if fmt is None:
                fmt = row_fmt
            elif row_fmt != fmt:
                raise ValueError(f"row is in {row_fmt} format but the file started as {fmt}")
            check_row(row, fmt)
        except ValueError as exc:
            raise DataError(path, lineno, str(exc)) from None
        rows.append(row)
    if fmt is None:
        raise DataError(path, 0, "file is empty")
    return rows, fmt


@dataclass
class SplitReport:
    path: str
    format: str | None = None
    rows: int = 0
    errors: list[str] = field(default_factory=list)


def validate_file(path: str | Path, max_errors: int = 50) -> SplitReport:
    """Check every row (not just the first error) so a user fixes a file in one pass."""
    path = Path(path)
    report = SplitReport(str(path))
    try:
        for lineno, row in iter_jsonl(path):
            try:
                row_fmt = detect_format(row)
                if report.format is None:
                    report.format = row_fmt
                elif row_fmt != report.format:
                    raise ValueError(f"row is in {row_fmt} format but the file started as {report.format}")
                check_row(row, report.format)  # type: ignore[arg-type]
                report.rows += 1
            except ValueError as exc:
                report.errors.append(str(DataError(path, lineno, str(exc))))
            if len(report.errors) >= max_errors:
                break
    except DataError as exc:  # undecodable / unparsable line stops the reader
        report.errors.append(str(exc))
        # keep going after a bad line: re-scan the rest line by line
        report.errors += _scan_rest(path, exc.line, max_errors - len(report.errors))
    if report.rows == 0 and not report.errors:
        report.errors.append(f"{path.name}:0: file is empty")
    return report


def _scan_rest(path: Path, after: int, budget: int) -> list[str]:
    errors: list[str] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno <= after or budget <= len(errors):
                continue
            try:
                obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
                if obj is not None:
                    check_row(obj, detect_format(obj))
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
                errors.append(str(DataError(path, lineno, str(exc))))
    return errors


def split_files(folder: str | Path) -> dict[str, Path]:
    """{split: path} for the train/valid/test.jsonl files present in `folder`."""
    folder = Path(folder)
    return {s: folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()}


def load_split(folder: str | Path, split: str) -> tuple[list[dict[str, Any]], Format]:
    """Rows of one split from a local folder (validated) or a hub dataset id."""
    path = Path(folder) / f"{split}.jsonl"
    if path.is_file():
        return load_jsonl(path)
    if not Path(folder).exists() and "/" in str(folder):
        from tickerpulse.data.hub import load_hub_split

        return load_hub_split(str(folder), split)
    raise FileNotFoundError(f"{path} not found (a data folder needs {split}.jsonl)")
