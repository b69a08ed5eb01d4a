"""Distill's input: records (`tickerpulse.data.records.Record`), labeled or not.

Labeled files go through the data stage's readers (`tickerpulse.data.readers`: twitter-financial-news-
sentiment, Financial PhraseBank, FiQA with per-target scores, FinEntity with per-entity labels, CSV,
`{text, label}` JSONL), so distill reads exactly what `tickerpulse data convert` reads. Files without gold labels (`{id?, text}` JSONL, or a CSV with
a `text` column and no label/score column) are read by the small reader here into records with label
None and source "raw", as are hub dataset ids.

Every reader streams line by line through the data stage's hostile-input handling (not UTF-8, huge lines,
NaN, deep nesting, CSV fields over the csv module's limit all become `file:line: reason`), and `limit`
stops reading early.

Known limitation: gold labels are all-or-nothing per file (a labeled file with an unlabeled row is an error
naming the line, as in `data convert`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import DataError, iter_jsonl
from tickerpulse.data.readers import csv_error_reason, csv_lines, read_records
from tickerpulse.data.records import Record, normalize_label


def load_raw(source: str | Path, limit: int | None = None) -> list[Record]:
    """Read records to label from a .jsonl / .csv file, a folder holding train.jsonl, or a hub dataset id.

    Args:
        source: path or hub id (`owner/name`, needs the `datasets` package and network).
        limit: keep the first this-many rows (None: all).

    Raises:
        FileNotFoundError: the path does not exist and is not a hub id.
        DataError: a row does not fit (`file:line: reason`).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "train.jsonl"
    if path.is_file():
        return read_records(path, limit=limit or None) if _has_labels(path) else _read_unlabeled(path, limit)
    if "/" in str(source) and not path.exists() and not str(source).startswith((".", "/")):
        return _load_hub(str(source), limit)
    raise FileNotFoundError(f"input {source} not found (expected a .jsonl/.csv file, a folder or a hub dataset id)")


def _has_labels(path: Path) -> bool:
    """Does the file carry gold labels (label / score / FiQA targets / FinEntity entities)? Looks at the
    header or first row."""
    if path.suffix.lower() in (".csv", ".tsv"):
        header = next(_csv_rows(path), (0, []))[1]
        return "label" in header or "score" in header
    for _, row in iter_jsonl(path):
        return isinstance(row, dict) and any(k in row for k in ("label", "score", "targets", "entities"))
    return False


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) per CSV record, decoded line by line; DataError names file:line."""
    reader = csv.reader(csv_lines(path), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        for fields in reader:
            yield reader.line_num, fields
    except csv.Error as exc:
        raise DataError(path, reader.line_num, csv_error_reason(exc)) from None


def _read_unlabeled(path: Path, limit: int | None) -> list[Record]:
    rows: list[Record] = []
    if path.suffix.lower() in (".csv", ".tsv"):
        records = _csv_rows(path)
        header = next(records, (0, []))[1]
        for lineno, fields in records:
            if not any(f.strip() for f in fields):
                continue
            rows.append(_unlabeled(dict(zip(header, fields)), path, lineno))
            if limit and len(rows) >= limit:
                break
    else:
        for lineno, obj in iter_jsonl(path):
            rows.append(_unlabeled(obj, path, lineno))
            if limit and len(rows) >= limit:
                break
    return rows


def _unlabeled(obj: Any, where: Path | str, lineno: int) -> Record:
    if not isinstance(obj, dict):
        raise DataError(where, lineno, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(where, lineno, "'text' must be a non-empty string")
    return Record(id=str(obj.get("id") or f"{Path(str(where)).stem}-{lineno}"), text=text, label=None, source="raw")


def _load_hub(dataset_id: str, limit: int | None) -> list[Record]:
    from tickerpulse._optional import require

    datasets = require("datasets", "reading a hub dataset")
    try:
        ds = datasets.load_dataset(dataset_id, split="train")
    except Exception as exc:  # offline, missing, gated
        raise FileNotFoundError(
            f"hub dataset {dataset_id!r} could not be loaded ({type(exc).__name__}: {exc}); "
            "download it where the hub is reachable and pass a local .jsonl"
        ) from None
    label_feature = getattr(ds, "features", {}).get("label")
    rows = []
    for i, rec in enumerate(ds, start=1):
        row = _unlabeled(dict(rec), dataset_id, i)
        label = rec.get("label")
        if label is not None:
            if isinstance(label, int) and hasattr(label_feature, "int2str"):  # ClassLabel -> its name
                label = label_feature.int2str(label)
            try:
                row.label = normalize_label(label)
            except ValueError as exc:
                raise DataError(dataset_id, i, f"{exc}; convert the dataset with `tickerpulse data convert`") from None
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows
