"""Labeled records from the public financial-sentiment datasets, in one shape.

A record is `{id, text, label, score?, tickers?, targets?, source}`:
- `label`: negative | neutral | positive;
- `score`: a continuous gold score in [-1, 1] when the dataset has one (FiQA), else absent;
- `tickers`: upper-case symbols mentioned (the dataset's own, else found by `extract_tickers`);
- `targets`: per-target gold `[{target, ticker, score, label}]` (FiQA: a company name or a symbol);
- `source`: which reader made it (tfns, fpb, fiqa, csv, records).

Readers (auto-detected from a file's fields, or forced with `fmt`):
- `tfns`: twitter-financial-news-sentiment (`label` string or the hub's int 0=Bearish 1=Bullish 2=Neutral);
- `fpb`: Financial PhraseBank (`text`/`sentence`, `label` string or the hub's int 0=neg 1=neu 2=pos);
- `fiqa`: FiQA 2018 task 1 (`targets` with scores; symbols of posts become tickers);
- `csv`: any CSV, with column names given by `CsvColumns` (labels as words, numbers, or a label map);
- `records`: files already in this shape (and any `{text, label}` JSONL).

Known limitation: company names (FiQA headline targets such as "Royal Mail") are not mapped to symbols.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tickerpulse.data.formats import DataError, iter_jsonl
from tickerpulse.data.sentiment import LABELS, TICKER_RE, score_to_label

SourceFormat = Literal["tfns", "fpb", "fiqa", "csv", "records"]
SOURCE_FORMATS: tuple[str, ...] = ("tfns", "fpb", "fiqa", "csv", "records")

# Words datasets use for the three labels (lower-cased before lookup).
LABEL_WORDS = {
    "negative": "negative", "neg": "negative", "bearish": "negative", "bear": "negative", "-1": "negative",
    "neutral": "neutral", "neu": "neutral", "none": "neutral", "0": "neutral",
    "positive": "positive", "pos": "positive", "bullish": "positive", "bull": "positive", "1": "positive",
}
TFNS_INT_LABELS = {0: "negative", 1: "positive", 2: "neutral"}
FPB_INT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@dataclass
class Target:
    """One annotated target of a text: the name as written, its symbol if it is one, its gold score."""

    target: str
    score: float
    ticker: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or score_to_label(self.score)


@dataclass
class Record:
    """One labeled text (see the module docstring)."""

    id: str
    text: str
    label: str
    source: str
    score: float | None = None
    tickers: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label {self.label!r} is not one of {list(LABELS)}")
        if not self.text or not self.text.strip():
            raise ValueError("empty text")
        if self.score is not None and not -1.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside [-1, 1]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; optional fields only when they hold something."""
        d: dict[str, Any] = {"id": self.id, "text": self.text, "label": self.label}
        if self.score is not None:
            d["score"] = self.score
        if self.tickers:
            d["tickers"] = self.tickers
        if self.targets:
            d["targets"] = [{"target": t.target, "ticker": t.ticker, "score": t.score, "label": t.label}
                            for t in self.targets]
        d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        targets = [Target(target=t["target"], score=float(t["score"]), ticker=t.get("ticker"), label=t.get("label", ""))
                   for t in d.get("targets") or []]
        return cls(id=str(d["id"]), text=d["text"], label=d["label"], source=d.get("source", "records"),
                   score=d.get("score"), tickers=list(d.get("tickers") or []), targets=targets)


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


def normalize_label(value: Any, mapping: dict[Any, str] | None = None) -> str:
    """A dataset's label value -> negative/neutral/positive; ValueError names the value."""
    if mapping and value in mapping:
        return mapping[value]
    if mapping and str(value) in mapping:
        return mapping[str(value)]
    word = LABEL_WORDS.get(str(value).strip().lower())
    if word is None:
        raise ValueError(f"unknown label {value!r} (expected one of {list(LABELS)} or a --label-map entry)")
    return word


def clean_symbol(value: Any) -> str | None:
    """'$aapl' -> 'AAPL'; None when it is not a ticker symbol (e.g. a company name)."""
    if not isinstance(value, str):
        return None
    sym = value.strip().lstrip("$").upper()
    return sym if TICKER_RE.match(sym) else None


def _find_tickers(text: str) -> list[str]:
    from tickerpulse.stream.tickers import extract_tickers

    return [t for t in extract_tickers(text) if clean_symbol(t)]


def _dedupe(symbols: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for s in symbols:
        if s and s not in out:
            out.append(s)
    return out


# ------------------------------------------------------------------------------------------------ readers


def detect_source(row: dict[str, Any]) -> SourceFormat:
    """Which reader fits a JSON row, from its fields (ValueError says what was seen)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "source" in row and "text" in row and ("label" in row or "score" in row):
        return "records"  # our own records (`Record.to_dict` always names the source), also when mixed
    if isinstance(row.get("targets"), list) and "source" not in row:
        return "fiqa"
    if "original_label" in row or str(row.get("id", "")).startswith("tfns-"):
        return "tfns"
    if "sentence" in row or str(row.get("id", "")).startswith("fpb-"):
        return "fpb"
    if "text" in row and isinstance(row.get("label"), int):
        return "tfns"  # the hub's twitter-financial-news-sentiment rows are {text, label: int}
    if "text" in row and "label" in row:
        return "records"
    if "messages" in row:
        raise ValueError("this row is already chat JSONL (messages); convert takes labeled records")
    raise ValueError(f"cannot tell the dataset from the fields {sorted(row)}: pass --format")


def _from_tfns(row: dict[str, Any], n: int) -> Record:
    label = row["label"]
    label = TFNS_INT_LABELS[label] if isinstance(label, int) else normalize_label(label)
    tickers = _dedupe(clean_symbol(t) for t in row.get("tickers") or []) or _find_tickers(row["text"])
    return Record(id=str(row.get("id", f"tfns-{n}")), text=row["text"], label=label, source="tfns", tickers=tickers)


def _from_fpb(row: dict[str, Any], n: int) -> Record:
    text = row.get("text", row.get("sentence"))
    label = row["label"]
    label = FPB_INT_LABELS[label] if isinstance(label, int) else normalize_label(label)
    return Record(id=str(row.get("id", f"fpb-{n}")), text=text, label=label, source="fpb", tickers=_find_tickers(text))


def _from_fiqa(row: dict[str, Any], n: int) -> Record:
    text = row["text"]
    cashtags = set(_find_tickers(text)) | {s for t in row.get("tickers") or [] if (s := clean_symbol(t))}
    targets = []
    for t in row.get("targets") or []:
        name = str(t["target"])
        # a post's target is a symbol; a headline's is a company name (kept, with no ticker)
        sym = clean_symbol(name) if (row.get("kind") == "post" or name.strip().upper().lstrip("$") in cashtags) else None
        targets.append(Target(target=name, score=round(float(t["score"]), 3), ticker=sym))
    if targets:
        score = round(sum(t.score for t in targets) / len(targets), 3)
    else:
        score = float(row["score"])
    label = score_to_label(score)
    tickers = _dedupe([t.ticker for t in targets] + sorted(cashtags, key=text.upper().find))
    return Record(id=str(row.get("id", f"fiqa-{n}")), text=text, label=label, source="fiqa", score=score,
                  tickers=tickers, targets=targets)


def _from_records(row: dict[str, Any], n: int, source: str) -> Record:
    if "id" not in row:
        row = {**row, "id": f"{source}-{n}"}
    rec = Record.from_dict({**row, "label": normalize_label(row["label"]), "source": row.get("source", source)})
    if not rec.tickers:
        rec.tickers = _find_tickers(rec.text)
    return rec


def read_jsonl_records(path: str | Path, fmt: SourceFormat | None = None) -> Iterator[Record]:
    """Records from a JSONL dataset file; DataError names file:line of a row that does not fit.

    Without `fmt` each row is read by the reader its own fields fit, so a file mixing datasets (the recipe's
    records, or shared files concatenated) keeps every row's score, targets and source."""
    path = Path(path)
    n = 0
    for lineno, row in iter_jsonl(path):
        chosen = fmt
        try:
            chosen = fmt or detect_source(row)
            if chosen == "tfns":
                rec = _from_tfns(row, n)
            elif chosen == "fpb":
                rec = _from_fpb(row, n)
            elif chosen == "fiqa":
                rec = _from_fiqa(row, n)
            elif chosen == "records":
                rec = _from_records(row, n, path.stem)
            else:
                raise ValueError(f"format {chosen} cannot read JSONL")
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DataError(path, lineno, f"{reason} (reading as {chosen or '?'})") from None
        n += 1
        yield rec


def read_csv_records(path: str | Path, cols: CsvColumns | None = None) -> Iterator[Record]:
    """Records from a CSV file; the label comes from `cols.label`, or from `cols.score` when absent."""
    path = Path(path)
    cols = cols or CsvColumns()
    if cols.label is None and cols.score is None:
        raise ValueError("a CSV needs a label column or a score column (--label-col / --score-col)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        sep = cols.delimiter or ","
        reader: Iterable[Any] = csv.DictReader(fh, delimiter=sep) if cols.header else (
            {str(i): v for i, v in enumerate(r)} for r in csv.reader(fh, delimiter=sep))
        if cols.header:
            fields = reader.fieldnames or []  # type: ignore[attr-defined]
            wanted = [c for c in (cols.text, cols.label, cols.score, cols.ticker, cols.id) if c]
            missing = [c for c in wanted if c not in fields]
            if missing:
                raise DataError(path, 1, f"no column {', '.join(map(repr, missing))} (columns: {', '.join(fields)})")
        for n, row in enumerate(reader):
            lineno = n + 2 if cols.header else n + 1
            try:
                text = row[cols.text]
                score = float(row[cols.score]) if cols.score and row.get(cols.score) not in (None, "") else None
                if cols.label and row.get(cols.label) not in (None, ""):
                    label = normalize_label(row[cols.label].strip(), cols.label_map)
                elif score is not None:
                    label = score_to_label(score)
                else:
                    raise ValueError("no label and no score")
                raw_tickers = re.split(r"[\s,;|]+", row.get(cols.ticker) or "") if cols.ticker else []
                tickers = _dedupe(clean_symbol(t) for t in raw_tickers) or _find_tickers(text)
                rec = Record(id=(row.get(cols.id) if cols.id else None) or f"{path.stem}-{n}", text=text, label=label,
                             source="csv", score=score, tickers=tickers)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(path, lineno, str(exc)) from None
            yield rec


def read_records(path: str | Path, fmt: SourceFormat | None = None, csv_columns: CsvColumns | None = None) -> list[Record]:
    """All records of one dataset file (`.csv` -> the CSV reader unless another format is forced)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if fmt == "csv" or (fmt is None and path.suffix.lower() in {".csv", ".tsv"}):
        cols = csv_columns or CsvColumns()
        if cols.delimiter is None:
            cols = replace(cols, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return list(read_csv_records(path, cols))
    return list(read_jsonl_records(path, fmt))


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows as UTF-8 JSONL (parents created); returns the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
