"""Dataset files -> labeled records: the reader for a file (by suffix or `--format`) and the CSV reader.

The JSONL dataset readers and the record model live in `tickerpulse.data.records`; this module adds CSV
files (any column names through `CsvColumns`) and `read_records`/`iter_records`, which pick the reader.
CSV files are decoded line by line through `formats.iter_lines` (bounded line length, BOM at the start
accepted), so a bad byte or a field over the csv module's 131,072-character limit is `file:line: reason`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tickerpulse.data.formats import DataError, iter_lines
from tickerpulse.data.records import (
    ROW_ERRORS,
    Record,
    SourceFormat,
    as_score,
    dedupe_symbols,
    iter_jsonl_records,
    normalize_label,
    short,
)
from tickerpulse.task.contract import score_to_label
from tickerpulse.task.questions import clean_symbol, symbols_of


@dataclass
class CsvColumns:
    """Which CSV columns hold what (names; with `header=False`, 0-based column numbers as strings)."""

    text: str = "text"
    label: str | None = "label"
    score: str | None = None
    ticker: str | None = None
    id: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)  # raw value -> label, e.g. {"0": "negative"}
    header: bool = True
    delimiter: str | None = None  # None: tab for .tsv files, comma otherwise


def csv_lines(path: Path) -> Iterator[str]:
    """The file's lines for the csv module, decoded one by one so a bad byte is reported with its line."""
    for lineno, text, error in iter_lines(path):
        if error is not None:
            raise DataError(path, lineno, error)
        yield text  # type: ignore[misc]


def csv_error_reason(exc: csv.Error) -> str:
    """A csv.Error as a short reason (the field-size limit named in characters)."""
    reason = str(exc)
    if "field larger than field limit" in reason:
        return f"CSV field longer than {csv.field_size_limit():,} characters (the csv module's limit)"
    return f"CSV: {reason}"


def iter_csv_records(path: str | Path, cols: CsvColumns | None = None) -> Iterator[tuple[int, Record]]:
    """(line, record) per CSV record; the label comes from `cols.label`, or from `cols.score` when absent.

    The line is where the record ends (a quoted field may span lines). Raises DataError naming file:line.
    """
    path = Path(path)
    cols = cols or CsvColumns()
    if cols.label is None and cols.score is None:
        raise ValueError("a CSV needs a label column or a score column (--label-col / --score-col)")
    sep = cols.delimiter or ","
    base = csv.reader(csv_lines(path), delimiter=sep)
    try:
        if cols.header:
            fields = next(base, None)
            if fields is None:
                raise DataError(path, 0, "file is empty")
            wanted = [c for c in (cols.text, cols.label, cols.score, cols.ticker, cols.id) if c]
            missing = [c for c in wanted if c not in fields]
            if missing:
                raise DataError(path, base.line_num, f"no column {', '.join(map(repr, missing))} "
                                                     f"(columns: {', '.join(f[:40] for f in fields[:50])})")
            names = fields
        n = 0
        for values in base:
            lineno = base.line_num
            if not values or not any(v.strip() for v in values):
                continue  # a blank line, as in JSONL
            row: dict[str, str] = (dict(zip(names, values)) if cols.header
                                   else {str(i): v for i, v in enumerate(values)})
            try:
                rec = _csv_record(row, cols, f"{path.stem}-{n}")
            except ROW_ERRORS as exc:
                reason = f"missing column {exc}" if isinstance(exc, KeyError) else str(exc)
                raise DataError(path, lineno, reason) from None
            n += 1
            yield lineno, rec
    except csv.Error as exc:
        raise DataError(path, base.line_num, csv_error_reason(exc)) from None


def _csv_record(row: dict[str, str], cols: CsvColumns, default_id: str) -> Record:
    if cols.text not in row:
        raise ValueError(f"the row has no {short(cols.text)} column (too few fields)")
    text = row[cols.text]
    score = as_score(row[cols.score]) if cols.score and row.get(cols.score, "").strip() else None
    if cols.label and row.get(cols.label, "").strip():
        label = normalize_label(row[cols.label].strip(), cols.label_map)
    elif score is not None:
        label = score_to_label(score)
    else:
        raise ValueError("no label and no score")
    raw_tickers = re.split(r"[\s,;|]+", row.get(cols.ticker) or "") if cols.ticker else []
    tickers = dedupe_symbols(clean_symbol(t) for t in raw_tickers) or symbols_of(text)
    return Record(id=(row.get(cols.id) if cols.id else None) or default_id, text=text, label=label,
                  source="csv", score=score, tickers=tickers)


def read_csv_records(path: str | Path, cols: CsvColumns | None = None) -> Iterator[Record]:
    """Records from a CSV file (see `iter_csv_records`)."""
    return (rec for _, rec in iter_csv_records(path, cols))


def iter_records(path: str | Path, fmt: SourceFormat | None = None,
                 csv_columns: CsvColumns | None = None) -> Iterator[tuple[int, Record]]:
    """(line, record) per row of one dataset file, streamed (`.csv`/`.tsv` -> the CSV reader unless another
    format is forced).

    Raises:
        FileNotFoundError: no such file.
        DataError: a row that does not fit, as `file:line: reason`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if fmt == "csv" or (fmt is None and path.suffix.lower() in {".csv", ".tsv"}):
        cols = csv_columns or CsvColumns()
        if cols.delimiter is None:
            cols = replace(cols, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return iter_csv_records(path, cols)
    return iter_jsonl_records(path, fmt)


def read_records(path: str | Path, fmt: SourceFormat | None = None, csv_columns: CsvColumns | None = None,
                 limit: int | None = None) -> list[Record]:
    """The records of one dataset file (the first `limit` of them when given; the rest is not read)."""
    out: list[Record] = []
    if limit is not None and limit <= 0:
        return out
    for _, rec in iter_records(path, fmt, csv_columns):
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    return out
