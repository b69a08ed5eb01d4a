"""The three mlx-lm data formats, validated row by row with file:line errors.

- chat:        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...], "tools"?: [...]}
- completions: {"prompt": str, "completion": str}
- text:        {"text": str}

A folder holds train.jsonl / valid.jsonl / test.jsonl (any may be missing); a hub dataset id in its place
is loaded through `datasets` (`load_split`). All rows of one file must share
one format. Extra keys are allowed (ids, provenance) and ignored by training.

Hostile files are the normal case: every reader here streams line by line with a bounded line length, so
a broken row costs its own line and nothing more, and each problem comes out as `file:line: reason`
(not UTF-8, a line over `MAX_LINE_BYTES`, invalid JSON, NaN/Infinity, numbers out of range, nesting too
deep for the parser, lone surrogates that cannot be written back as UTF-8). A UTF-8 BOM is accepted at
the start of a file only.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Format = Literal["chat", "completions", "text"]
SPLITS = ("train", "valid", "test")
ROLES = {"system", "user", "assistant", "tool", "developer"}
# a training row is a few KB; a longer line is garbage (a binary file, a missing newline) and reading it
# whole would cost memory in proportion to the file
MAX_LINE_BYTES = 16 * 1024 * 1024
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class DataError(ValueError):
    """A broken row: the message is `file:line: reason`."""

    MAX_REASON = 300  # reasons quote row data; a 100 KB field must not become a 100 KB error line

    def __init__(self, path: str | Path, line: int, reason: str):
        reason = " ".join(reason.split())  # one line, whatever the data held
        if len(reason) > self.MAX_REASON:
            reason = reason[: self.MAX_REASON - 1] + "…"
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
    keys = ", ".join(k[:40] for k in sorted(row)[:20]) or "none"
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
            if not isinstance(role, str) or role not in ROLES:
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


def iter_lines(path: str | Path, max_bytes: int | None = None, replace_invalid: bool = False
               ) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line_number, text, None) per physical line decoded as UTF-8, or (line_number, None, reason).

    Memory stays bounded by `max_bytes` (default `MAX_LINE_BYTES`) per line: a longer line is reported and
    skipped in chunks. A BOM at the start of the file is dropped (editors on Windows write one).
    `replace_invalid` turns invalid UTF-8 into U+FFFD instead of reporting the line (the stream's replay:
    a post with one bad byte is still a post; a training file with one is a broken file).
    """
    limit = max_bytes or MAX_LINE_BYTES
    with open(path, "rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):  # limit+1 bytes with no newline: too long
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line without holding it
                    raw = fh.readline(1 << 20)
                yield lineno, None, f"line longer than {limit:,} bytes (not a data row)"
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield lineno, raw.decode("utf-8", errors="replace" if replace_invalid else "strict"), None
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}: {exc.reason})"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (use null or a number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range for a float")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)  # built once: a row per call


def parse_json(text: str) -> Any:
    """Strict JSON for one line; ValueError with a short reason (never RecursionError/OverflowError)."""
    if text.startswith("\ufeff"):
        raise ValueError("invalid JSON: a UTF-8 BOM starts the line (only the file's first line may have one)")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deep for the parser") from None
    except ValueError as exc:  # NaN/Infinity, 1e999, or an integer over the interpreter's digit limit
        reason = str(exc)
        if "integer string conversion" in reason:
            reason = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise ValueError(f"invalid JSON: {reason}") from None
    if _ESCAPED_SURROGATE.search(text):  # a lone surrogate parses but cannot be written back as UTF-8
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("invalid JSON: a string holds a lone surrogate (\\ud800-\\udfff), not Unicode text") from None
    return obj


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line_number, parsed_object, None) per non-blank line, or (line_number, None, reason)."""
    for lineno, text, error in iter_lines(path):
        if error is not None:
            yield lineno, None, error
            continue
        assert text is not None
        if not text.strip():
            continue
        try:
            yield lineno, parse_json(text), None
        except ValueError as exc:
            yield lineno, None, str(exc)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, parsed_object) for non-blank lines; DataError names file and line."""
    for lineno, obj, error in iter_json_lines(path):
        if error is not None:
            raise DataError(path, lineno, error)
        yield lineno, obj


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
    for lineno, row, error in iter_json_lines(path):
        try:
            if error is not None:
                raise ValueError(error)
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
    if report.rows == 0 and not report.errors:
        report.errors.append(f"{path.name}:0: file is empty")
    return report


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
        return load_hub_split(str(folder), split)
    raise FileNotFoundError(f"{path} not found (a data folder needs {split}.jsonl)")


_HUB_SPLIT_NAMES = {"valid": ("validation", "valid", "val"), "train": ("train",), "test": ("test",)}


def load_hub_split(dataset_id: str, split: str) -> tuple[list[dict[str, Any]], Format]:
    """One split of a hub dataset (e.g. `mlx-community/wikisql`), validated like a local file; needs the
    `datasets` package (`pip install 'tickerpulse[hub]'`)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("loading a hub dataset needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # offline, missing, gated
        raise FileNotFoundError(
            f"hub dataset {dataset_id!r} could not be loaded ({type(exc).__name__}: {exc}); "
            "download it where the hub is reachable and pass a local folder with train/valid/test.jsonl"
        ) from None
    name = next((n for n in _HUB_SPLIT_NAMES[split] if n in ds), None)
    if name is None:
        raise FileNotFoundError(f"hub dataset {dataset_id!r} has no {split} split (has {list(ds)})")
    rows = [dict(r) for r in ds[name]]
    fmt: Format | None = None
    for i, row in enumerate(rows, start=1):
        try:
            fmt = fmt or detect_format(row)
            check_row(row, fmt)
        except ValueError as exc:
            raise DataError(f"{dataset_id}/{name}", i, str(exc)) from None
    return rows, fmt or "text"
