"""Labeled records -> chat JSONL for the sentiment task (gold answers, no teacher needed).

One chat row per question the record asks (`Record.questions(limit=None)`, the one rule of
`tickerpulse.task.questions`), each asking about its target (`task.contract.resolve_target`):
- FiQA and FinEntity: one row per distinct annotated target, as annotated (a symbol such as `P`, or an
  entity name such as `Royal Mail` whose ticker is the company table's symbol or null), with that target's
  own score (the mean when a paragraph annotates the same target twice);
- otherwise one row per ticker of the record (the dataset's, else `extract_tickers`), or one about the
  market (target and ticker null) when there is none; the score is the record's own, else
  `LABEL_SCORES[label]`.
- with a prompt without targets (sentiment-v1, which shows only the symbol) the targets sharing a symbol
  are one row with their mean score, so no prompt gets two answers.

The assistant answer is `format_answer(...)` with a templated reasoning sentence that says it is a
template, and `meta.reasoning = "template"` marks it too: the distill stage replaces it with a
teacher's reasoning. `meta` also records the prompt version and hash, the source, the record id and text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from tickerpulse.data.formats import DataError
from tickerpulse.data.readers import CsvColumns, iter_records
from tickerpulse.data.records import Record, SourceFormat
from tickerpulse.task.contract import (
    DEFAULT_PROMPT,
    LABEL_SCORES,
    build_messages,
    format_answer,
    load_prompt,
    score_to_label,
)

Target = Literal["records", "chat"]
SOURCE_NAMES = {"tfns": "twitter-financial-news-sentiment", "fpb": "Financial PhraseBank", "fiqa": "FiQA",
                "finentity": "FinEntity", "csv": "CSV", "records": "labeled records"}


def template_reasoning(source: str, label: str, target: str | None, ticker: str | None) -> str:
    """A reasoning sentence that is honest about being a template (not model-written), naming what it is
    about: "$AAPL" for a symbol, the entity name as asked ("Royal Mail"), else "the market". `target` and
    `ticker` as `resolve_target` gives them (a target holds at most 80 characters, so the sentence fits the
    answer's 400)."""
    subject = f"${ticker}" if ticker and ticker == target else target or "the market"
    return f"Template (gold {SOURCE_NAMES.get(source, source)} label, no model reasoning): {label} for {subject}."


def _asked(rec: Record, answer_target: bool) -> list[tuple[str, str | None, str | None, str, float]]:
    """(id, target, ticker, label, score) per chat row. A prompt without targets (sentiment-v1) shows only the
    symbol, so the targets that share one (the names without a symbol: `Ticker: none`) would be one prompt
    with several answers: they are one question about that symbol, with their mean score."""
    asked = []
    for q in rec.questions(limit=None):
        if q.label is None:
            raise ValueError("no gold label (an unlabeled text: label it with `tickerpulse distill`)")
        asked.append((q.id, q.target, q.ticker, q.label, q.score if q.score is not None else LABEL_SCORES[q.label]))
    if answer_target:
        return asked
    groups: dict[str | None, list[tuple[str, str | None, str | None, str, float]]] = {}
    for row in asked:
        groups.setdefault(row[2], []).append(row)
    out = []
    for ticker, rows in groups.items():
        if len(rows) == 1:
            out.append(rows[0])
            continue
        mean = round(sum(r[4] for r in rows) / len(rows), 3)
        qid = rec.id if len(groups) == 1 else f"{rec.id}:{ticker}"
        out.append((qid, ticker, ticker, score_to_label(mean), mean))
    return out


def record_to_chat(rec: Record, prompt_version: str = DEFAULT_PROMPT) -> list[dict[str, Any]]:
    """Chat rows (system, user, assistant) with a `meta` block, one per question the prompt can tell apart.

    Raises:
        ValueError: a gold score contradicts the label (e.g. neutral with score 0.9), or a target is too long.
    """
    prompt = load_prompt(prompt_version)
    rows = []
    for qid, target, ticker, label, score in _asked(rec, prompt["answer_target"]):
        reasoning = template_reasoning(rec.source, label, target, ticker)
        answer = format_answer(target, label, score, reasoning, prompt_version)
        rows.append({
            "messages": [*build_messages(rec.text, target, prompt_version), {"role": "assistant", "content": answer}],
            "meta": {
                "id": qid,
                "record_id": rec.id,
                "source": rec.source,
                "text": rec.text,
                "target": target,
                "ticker": ticker,
                "label": label,
                "score": round(float(score), 2),
                "reasoning": "template",
                "prompt_version": prompt["version"],
                "prompt_hash": prompt["hash"],
            },
        })
    return rows


@dataclass
class ConvertReport:
    """What a conversion read and wrote, per input file."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    records: int = 0
    rows: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    with_ticker: int = 0


def _chat_rows(records: Iterable[tuple[int, Record]], path: Path, report: ConvertReport,
               prompt_version: str) -> Iterator[dict[str, Any]]:
    for lineno, rec in records:
        report.records += 1
        try:
            rows = record_to_chat(rec, prompt_version)
        except ValidationError as exc:  # the gold answer breaks the answer schema
            raise DataError(path, lineno, f"record {rec.id}: {exc.errors()[0]['msg']}") from None
        except ValueError as exc:
            raise DataError(path, lineno, f"record {rec.id}: {exc}") from None
        for row in rows:
            report.rows += 1
            report.labels[row["meta"]["label"]] = report.labels.get(row["meta"]["label"], 0) + 1
            report.with_ticker += row["meta"]["ticker"] is not None
            yield row


def _record_rows(records: Iterable[tuple[int, Record]], report: ConvertReport) -> Iterator[dict[str, Any]]:
    for _, rec in records:
        report.records += 1
        report.rows += 1
        label = rec.label or "unlabeled"
        report.labels[label] = report.labels.get(label, 0) + 1
        report.with_ticker += bool(rec.tickers)
        yield rec.to_dict()


def output_path(out: Path, source: Path) -> Path:
    """`out` itself when it names a .jsonl file, else `out/<input stem>.jsonl` (one file per input)."""
    if out.suffix == ".jsonl":
        return out
    return out / f"{source.stem}.jsonl"


def output_paths(inputs: list[Path], out: Path) -> list[Path]:
    """The output file of each input; ValueError when one would overwrite its input."""
    dests = [output_path(out, path) for path in inputs]
    for path, dest in zip(inputs, dests, strict=True):
        if dest.resolve() == path.resolve():
            raise ValueError(f"{out} would overwrite the input {path}: choose another file or folder")
    return dests


def convert(
    inputs: list[Path],
    to: Target,
    out: Path,
    *,
    fmt: SourceFormat | None = None,
    csv_columns: CsvColumns | None = None,
    prompt_version: str = DEFAULT_PROMPT,
) -> ConvertReport:
    """Read dataset files and write labeled records or chat JSONL.

    Args:
        inputs: dataset files (JSONL or CSV); with a .jsonl `out` they are concatenated into it.
        to: "records" or "chat".
        out: a .jsonl file, or a folder that gets one `<input stem>.jsonl` per input.
        fmt: force a reader instead of detecting it from the fields.
        csv_columns: column mapping for CSV inputs.
        prompt_version: task prompt used for chat rows.

    Raises:
        DataError: a row that does not fit, as `file:line: reason`.
        FileNotFoundError: an input is missing.
        ValueError: `out` would overwrite an input.
    """
    if to not in ("records", "chat"):
        raise ValueError(f"--to must be records or chat, not {to!r}")
    report = ConvertReport(inputs=[str(p) for p in inputs])
    dests = output_paths(inputs, out)
    # rows stream into temporary files that replace the outputs only when every input converted: a broken
    # row never leaves a half-written output, and a huge input is never held in memory
    tmps: dict[Path, Path] = {}
    handles: dict[Path, Any] = {}
    try:
        for path, dest in zip(inputs, dests, strict=True):
            if dest not in handles:
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmps[dest] = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
                handles[dest] = open(tmps[dest], "w", encoding="utf-8")
            before = report.records
            records = iter_records(path, fmt, csv_columns)
            rows = _chat_rows(records, path, report, prompt_version) if to == "chat" else _record_rows(records, report)
            for row in rows:
                handles[dest].write(json.dumps(row, ensure_ascii=False) + "\n")
            if report.records == before:
                raise DataError(path, 0, "no records (the file is empty)")
        for dest, fh in handles.items():
            fh.close()
            os.replace(tmps[dest], dest)
            report.outputs.append(str(dest))
    finally:
        for dest, fh in handles.items():
            fh.close()
            tmps[dest].unlink(missing_ok=True)
    return report
