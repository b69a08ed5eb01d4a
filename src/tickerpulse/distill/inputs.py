"""Raw input rows for distillation: `{id, text, label?, score?, tickers?}` from JSONL, CSV or a hub dataset.

Known limitation: this is a small reader kept local to distill until the foundation engineer's
`tickerpulse.data.records` readers land; then `load_raw` delegates to them. Gold labels are strings
(`negative|neutral|positive`, also `bearish|bullish`); a continuous `score` in [-1, 1] (FiQA) is kept.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import DataError, iter_jsonl
from tickerpulse.data.sentiment import LABELS, Label

_LABEL_ALIASES = {"bearish": "negative", "bullish": "positive", "neg": "negative", "pos": "positive", "neu": "neutral"}


@dataclass
class RawRow:
    """One text to label, with its optional gold judgement."""

    id: str
    text: str
    label: Label | None = None
    score: float | None = None
    tickers: list[str] = field(default_factory=list)


def load_raw(source: str | Path, limit: int | None = None) -> list[RawRow]:
    """Read raw rows from a .jsonl / .csv file, a folder holding train.jsonl, or a hub dataset id.

    Args:
        source: path or hub id (`owner/name`, needs the `datasets` package and network).
        limit: stop after this many rows (None: all).

    Raises:
        FileNotFoundError: the path does not exist and is not a hub id.
        DataError: a row has no text or an unknown label (`file:line: reason`).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "train.jsonl"
    if path.is_file():
        if path.suffix.lower() == ".csv":
            items = _iter_csv(path)
        else:
            items = iter_jsonl(path)
        rows = []
        for lineno, obj in items:
            rows.append(_to_row(obj, path, lineno))
            if limit and len(rows) >= limit:
                break
        return rows
    if "/" in str(source) and not path.exists() and not str(source).startswith((".", "/")):
        return _load_hub(str(source), limit)
    raise FileNotFoundError(f"input {source} not found (expected a .jsonl/.csv file, a folder or a hub dataset id)")


def _iter_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        for i, rec in enumerate(csv.DictReader(fh), start=2):  # line 1 is the header
            yield i, {k: v for k, v in rec.items() if v not in (None, "")}


def _to_row(obj: Any, path: Path | str, lineno: int) -> RawRow:
    if not isinstance(obj, dict):
        raise DataError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, lineno, "'text' must be a non-empty string")
    label = obj.get("label")
    if label is not None:
        key = str(label).strip().lower()
        key = _LABEL_ALIASES.get(key, key)
        if key not in LABELS:
            raise DataError(path, lineno, f"label {label!r} is not one of {list(LABELS)} (or bearish/bullish)")
        label = key
    score = obj.get("score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise DataError(path, lineno, f"score {score!r} is not a number") from None
        if not -1.0 <= score <= 1.0:
            raise DataError(path, lineno, f"score {score} is outside [-1, 1]")
    tickers = obj.get("tickers") or []
    if isinstance(tickers, str):
        tickers = [t for t in tickers.replace(",", " ").split() if t]
    return RawRow(id=str(obj.get("id", f"row-{lineno}")), text=text, label=label, score=score, tickers=list(tickers))


def _load_hub(dataset_id: str, limit: int | None) -> list[RawRow]:
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
        rec = dict(rec)
        if isinstance(rec.get("label"), int) and hasattr(label_feature, "int2str"):  # ClassLabel -> its name
            rec["label"] = label_feature.int2str(rec["label"])
        rows.append(_to_row(rec, dataset_id, i))
        if limit and len(rows) >= limit:
            break
    return rows
