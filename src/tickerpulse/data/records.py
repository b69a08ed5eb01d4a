"""Labeled records from the public financial-sentiment datasets, in one shape.

A record is `{id, text, label, score?, tickers, targets?, source, dataset?}`, THE labeled-row type of every
stage (data convert/split, distill's input, the recipe's splits):
- `label`: negative | neutral | positive; None only for an unlabeled text (distill's teacher labels it);
- `score`: a continuous gold score in [-1, 1] when the dataset has one (FiQA), else absent;
- `tickers`: upper-case symbols mentioned (the dataset's own, else found by `extract_tickers`);
- `targets`: per-target gold `[{target, ticker, score, label}]` (FiQA: a company name or a symbol with its
  score; FinEntity: an entity name, its symbol when a US Reuters RIC follows it, a label and no score);
- `source`: which reader made it (tfns, fpb, fiqa, finentity, csv, records, raw for unlabeled texts);
- `dataset`: the dataset a recipe assigned it to (tfns, fpb, fiqa), empty otherwise.
Which ticker a record asks about is `Record.questions` (the one rule, `tickerpulse.task.questions`).

Readers (auto-detected from a file's fields, or forced with `fmt`):
- `tfns`: twitter-financial-news-sentiment (`label` string or the hub's int 0=Bearish 1=Bullish 2=Neutral);
- `fpb`: Financial PhraseBank (`text`/`sentence`, `label` string or the hub's int 0=neg 1=neu 2=pos);
- `fiqa`: FiQA 2018 task 1 (`targets` with scores; symbols of posts become tickers);
- `finentity`: FinEntity (`entities` [{name, start?, end?, label}] of a news paragraph): one `Target` per
  mention with its label and no score (the dataset has labels only); ticker = the symbol of a US Reuters RIC
  right after a mention of that name (`Tesla Inc <TSLA.O>` -> TSLA; `.N` `.O` `.OQ` `.A` `.K` listings only:
  a foreign or index RIC is no US symbol); the record's label is that of the mean of its targets' stock
  scores (`LABEL_SCORES`), as FiQA's is of the mean score;
- `csv`: any CSV, with column names given by `CsvColumns` (in `tickerpulse.data.readers`, which also picks
  the reader for a file: `read_records`);
- `records`: files already in this shape (and any `{text, label}` JSONL).

Every reader streams (one line at a time) and turns any row that does not fit, including wrong types and
non-finite or huge numbers, into a `DataError` naming `file:line`; the first broken row stops the read (see
`tickerpulse data validate` to list them all).

Named targets (FiQA headline targets such as "Royal Mail", FinEntity entities) are asked about by name; their
symbol is the company table's when it knows the name (`task.contract.resolve_target`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tickerpulse.data.formats import DataError, iter_jsonl
from tickerpulse.task.contract import LABEL_SCORES, LABELS, score_to_label
from tickerpulse.task.questions import Question, clean_symbol, questions_of, symbols_of

SourceFormat = Literal["tfns", "fpb", "fiqa", "finentity", "csv", "records"]
SOURCE_FORMATS: tuple[str, ...] = ("tfns", "fpb", "fiqa", "finentity", "csv", "records")

# Words datasets use for the three labels (lower-cased before lookup).
LABEL_WORDS = {
    "negative": "negative", "neg": "negative", "bearish": "negative", "bear": "negative", "-1": "negative",
    "neutral": "neutral", "neu": "neutral", "none": "neutral", "0": "neutral",
    "positive": "positive", "pos": "positive", "bullish": "positive", "bull": "positive", "1": "positive",
}
TFNS_INT_LABELS = {0: "negative", 1: "positive", 2: "neutral"}
FPB_INT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}
# what a broken row raises while a reader takes it apart (KeyError: a missing field; Overflow: a huge number)
ROW_ERRORS = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError)
# A US-listed Reuters RIC right after a name: NYSE .N, Nasdaq .O/.OQ, NYSE American .A, NYSE Arca .K
US_RIC = re.compile(r"[ \t]{0,3}<([A-Z]{1,5})\.(?:N|OQ|O|A|K)>")
MAX_ENTITIES = 256  # per paragraph (FinEntity has at most 11): bounds a hostile row's name searches


def short(value: Any, limit: int = 60) -> str:
    """repr of a value from the data, cut to `limit` characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_score(value: Any, what: str = "score") -> float:
    """A finite real number as float; ValueError names `what` otherwise (bools and strings of words too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{what} {str(value)[:40]!r} is not a number in [-1, 1]") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {str(value)[:40]} is not a finite number")
    return number


def unit_score(value: Any, what: str = "score") -> float:
    """`as_score` within [-1, 1] (a gold score of a record or a target)."""
    number = as_score(value, what)
    if not -1.0 <= number <= 1.0:
        raise ValueError(f"{what} {number} is outside [-1, 1]")
    return number


def mean_label(labels: Iterable[str]) -> str:
    """The label of the mean of the labels' stock scores (`LABEL_SCORES`): a label-only record's or a target's
    label from several annotated labels (one label repeated gives that label)."""
    scores = [LABEL_SCORES[label] for label in labels]
    return score_to_label(sum(scores) / len(scores))


def _int_label(value: Any, table: dict[int, str], dataset: str) -> str:
    if value not in table:
        raise ValueError(f"{dataset} label {short(value)} is not one of {sorted(table)} or a label word")
    return table[value]


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Target:
    """One annotated target of a text: the name as written, its symbol if it is one, its gold score when the
    dataset gives one (FiQA) and its label (given, or the score's). A label-only target keeps `score` None:
    a stock value in its place would pass for an annotation (the score temperature is fitted on real scores);
    whoever needs a number for it (the gold teacher's answer) takes `LABEL_SCORES[label]` there."""

    target: str
    score: float | None
    ticker: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise ValueError(f"target must be a string, got {type(self.target).__name__}")
        if self.score is not None:
            self.score = unit_score(self.score, "target score")
        elif not self.label:
            raise ValueError("a target needs a score or a label")
        if self.label and self.label not in LABELS:
            raise ValueError(f"target label {short(self.label)} is not one of {list(LABELS)}")
        self.label = self.label or score_to_label(self.score)  # type: ignore[arg-type]


@dataclass
class Record:
    """One labeled text (see the module docstring)."""

    id: str
    text: str
    label: str | None
    source: str
    score: float | None = None
    tickers: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.label is not None and (not isinstance(self.label, str) or self.label not in LABELS):
            raise ValueError(f"label {short(self.label)} is not one of {list(LABELS)}")
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a string, got {type(self.text).__name__}")
        if not self.text.strip():
            raise ValueError("empty text")
        if self.score is not None:
            self.score = unit_score(self.score)
        if not isinstance(self.tickers, list) or not all(isinstance(t, str) for t in self.tickers):
            raise ValueError("tickers must be a list of symbols")

    def target_gold(self) -> dict[str | None, tuple[str, float | None]]:
        """Per-target gold (label, score) by target as annotated (a symbol or an entity name); empty when the
        record annotates no target. A target annotated twice: the mean score rounded to 3 places and its
        label; label-only mentions their `mean_label`, with no score."""
        groups: dict[str | None, list[Target]] = {}
        for t in self.targets:
            groups.setdefault(t.target, []).append(t)
        out: dict[str | None, tuple[str, float | None]] = {}
        for key, ts in groups.items():
            if all(t.score is not None for t in ts):
                mean = round(sum(t.score for t in ts) / len(ts), 3)  # type: ignore[misc]
                out[key] = (score_to_label(mean), mean)
            else:
                out[key] = (mean_label(t.label for t in ts), None)
        return out

    def questions(self, limit: int | None = 1) -> list[Question]:
        """The questions this record asks (`questions_of`: its symbols, gold per target when annotated)."""
        return questions_of(self.text, id=self.id, tickers=self.tickers, label=self.label, score=self.score,
                            target_gold=self.target_gold() or None, source=self.source,
                            group=self.dataset or self.source, limit=limit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `tickers` always (an empty list says none was found), other optional fields
        only when they hold something."""
        d: dict[str, Any] = {"id": self.id, "text": self.text, "label": self.label}
        if self.score is not None:
            d["score"] = self.score
        d["tickers"] = self.tickers
        if self.targets:
            d["targets"] = [{"target": t.target, "ticker": t.ticker, "score": t.score, "label": t.label}
                            for t in self.targets]
        d["source"] = self.source
        if self.dataset:
            d["dataset"] = self.dataset
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record from its JSON form; ValueError/TypeError/KeyError says which field does not fit."""
        raw_targets = d.get("targets") or []
        if not isinstance(raw_targets, list) or not all(isinstance(t, dict) for t in raw_targets):
            raise ValueError("targets must be a list of {target, score and/or label} objects")
        targets = [Target(target=t["target"], score=t.get("score"), ticker=clean_symbol(t.get("ticker")),
                          label=normalize_label(t["label"]) if t.get("label") else "")
                   for t in raw_targets]
        tickers = d.get("tickers") or []
        if not isinstance(tickers, list):
            raise ValueError(f"tickers must be a list of symbols, got {type(tickers).__name__}")
        dataset = d.get("dataset") or ""
        if not isinstance(dataset, str):
            raise ValueError(f"dataset must be a string, got {type(dataset).__name__}")
        return cls(id=_id(d["id"]), text=d["text"], label=d["label"], source=str(d.get("source") or "records"),
                   score=d.get("score"), tickers=dedupe_symbols(clean_symbol(t) for t in tickers), targets=targets,
                   dataset=dataset)


def normalize_label(value: Any, mapping: dict[Any, str] | None = None) -> str:
    """A dataset's label value -> negative/neutral/positive; ValueError names the value."""
    if mapping and isinstance(value, (str, int, float)) and value in mapping:
        return mapping[value]
    if mapping and str(value) in mapping:
        return mapping[str(value)]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"label must be a word or a number, got {type(value).__name__}")
    word = LABEL_WORDS.get(str(value).strip().lower())
    if word is None:
        raise ValueError(f"unknown label {short(value)} (expected one of {list(LABELS)} or a --label-map entry)")
    return word


def _id(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"id must be a string or a number, got {type(value).__name__}")
    return str(value)


def _text(row: dict[str, Any], *keys: str) -> str:
    """The first of `keys` present in `row`, which must be a non-empty string."""
    key = next((k for k in keys if k in row), keys[0])
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _symbols(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"tickers must be a list of symbols, got {type(value).__name__}")
    return value


def dedupe_symbols(symbols: Iterable[str | None]) -> list[str]:
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
    if isinstance(row.get("entities"), list) and "source" not in row:
        return "finentity"
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
    raise ValueError(f"cannot tell the dataset from the fields {short(sorted(row))}: pass --format")


def _from_tfns(row: dict[str, Any], n: int) -> Record:
    label = row["label"]
    label = _int_label(label, TFNS_INT_LABELS, "tfns") if _plain_int(label) else normalize_label(label)
    text = _text(row, "text")
    tickers = dedupe_symbols(clean_symbol(t) for t in _symbols(row.get("tickers"))) or symbols_of(text)
    return Record(id=_id(row.get("id", f"tfns-{n}")), text=text, label=label, source="tfns", tickers=tickers)


def _from_fpb(row: dict[str, Any], n: int) -> Record:
    text = _text(row, "text", "sentence")
    label = row["label"]
    label = _int_label(label, FPB_INT_LABELS, "fpb") if _plain_int(label) else normalize_label(label)
    return Record(id=_id(row.get("id", f"fpb-{n}")), text=text, label=label, source="fpb", tickers=symbols_of(text))


def _from_fiqa(row: dict[str, Any], n: int) -> Record:
    text = _text(row, "text")
    cashtags = set(symbols_of(text)) | {s for t in _symbols(row.get("tickers")) if (s := clean_symbol(t))}
    targets = []
    raw_targets = row.get("targets") or []
    if not isinstance(raw_targets, list):
        raise ValueError(f"targets must be a list, got {type(raw_targets).__name__}")
    for t in raw_targets:
        if not isinstance(t, dict):
            raise ValueError(f"each target must be an object {{target, score}}, got {type(t).__name__}")
        name = _id(t["target"])
        # a post's target is a symbol; a headline's is a company name (kept, with no ticker)
        sym = clean_symbol(name) if (row.get("kind") == "post" or name.strip().upper().lstrip("$") in cashtags) else None
        targets.append(Target(target=name, score=round(as_score(t["score"], "target score"), 3), ticker=sym))
    if targets:
        score = round(sum(t.score for t in targets) / len(targets), 3)
    else:
        score = as_score(row["score"])
    label = score_to_label(score)
    tickers = dedupe_symbols([t.ticker for t in targets] + sorted(cashtags, key=text.upper().find))
    return Record(id=_id(row.get("id", f"fiqa-{n}")), text=text, label=label, source="fiqa", score=score,
                  tickers=tickers, targets=targets)


def _entity_span(text: str, e: dict[str, Any], i: int) -> tuple[str, int]:
    """(name, end offset) of entity `i`: its `start`/`end` must frame the name in the text when given."""
    name = e["name"]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"entities[{i}].name must be a non-empty string, got {short(name)}")
    if "start" not in e and "end" not in e:
        start = text.find(name)
        if start < 0:
            raise ValueError(f"entities[{i}].name {short(name)} is not in the text")
        return name, start + len(name)
    start, end = e.get("start"), e.get("end")
    if not (_plain_int(start) and _plain_int(end) and 0 <= start < end <= len(text)):
        raise ValueError(f"entities[{i}] start/end {short(start)}/{short(end)} are not offsets into the text")
    if text[start:end] != name:
        raise ValueError(f"entities[{i}]: text[{start}:{end}] is {short(text[start:end])}, not the name {short(name)}")
    return name, end


def _from_finentity(row: dict[str, Any], n: int) -> Record:
    text = _text(row, "text")
    entities = row["entities"]
    if not isinstance(entities, list) or not entities:
        raise ValueError("entities must be a non-empty list of {name, start, end, label}")
    if len(entities) > MAX_ENTITIES:
        raise ValueError(f"{len(entities)} entities in one paragraph (at most {MAX_ENTITIES})")
    mentions: list[tuple[str, str]] = []
    symbol: dict[str, str] = {}  # name -> the US symbol a RIC after any mention of it gives
    for i, e in enumerate(entities):
        if not isinstance(e, dict):
            raise ValueError(f"entities[{i}] must be an object {{name, start, end, label}}, got {type(e).__name__}")
        name, end = _entity_span(text, e, i)
        mentions.append((name, normalize_label(e["label"])))
        if (ric := US_RIC.match(text, end)) and (sym := clean_symbol(ric.group(1))):
            symbol.setdefault(name, sym)
    targets = [Target(target=name, score=None, ticker=symbol.get(name), label=label) for name, label in mentions]
    tickers = dedupe_symbols(t.ticker for t in targets) or symbols_of(text)
    return Record(id=_id(row.get("id", f"finentity-{n}")), text=text, label=mean_label(label for _, label in mentions),
                  source="finentity", tickers=tickers, targets=targets)


def _from_records(row: dict[str, Any], n: int, source: str) -> Record:
    if "id" not in row:
        row = {**row, "id": f"{source}-{n}"}
    rec = Record.from_dict({**row, "label": normalize_label(row["label"]), "source": row.get("source", source)})
    if not rec.tickers:
        rec.tickers = symbols_of(rec.text)
    return rec


def iter_jsonl_records(path: str | Path, fmt: SourceFormat | None = None) -> Iterator[tuple[int, Record]]:
    """(line, record) per row of a JSONL dataset file; DataError names file:line of a row that does not fit.

    Without `fmt` each row is read by the reader its own fields fit, so a file mixing datasets (the recipe's
    records, or shared files concatenated) keeps every row's score, targets and source."""
    path = Path(path)
    n = 0
    for lineno, row in iter_jsonl(path):
        chosen = fmt
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            chosen = fmt or detect_source(row)
            if chosen == "tfns":
                rec = _from_tfns(row, n)
            elif chosen == "fpb":
                rec = _from_fpb(row, n)
            elif chosen == "fiqa":
                rec = _from_fiqa(row, n)
            elif chosen == "finentity":
                rec = _from_finentity(row, n)
            elif chosen == "records":
                rec = _from_records(row, n, path.stem)
            else:
                raise ValueError(f"format {chosen} cannot read JSONL")
        except ROW_ERRORS as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DataError(path, lineno, f"{reason} (reading as {chosen or '?'})") from None
        n += 1
        yield lineno, rec


def read_jsonl_records(path: str | Path, fmt: SourceFormat | None = None) -> Iterator[Record]:
    """Records from a JSONL dataset file (see `iter_jsonl_records`)."""
    return (rec for _, rec in iter_jsonl_records(path, fmt))


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
