"""Deterministic train/valid/test split with no duplicate text across splits.

Rows are grouped by normalised text (case, URLs, punctuation and spacing ignored), so a retweet, the
same headline with another t.co link, or the same post converted once per ticker all land in one split.
Groups are ordered by a seeded hash of their key and cut by row counts, per label when labels are known
(stratified), so the same input and seed always give the same files and label mixes stay alike.

Texts are read from (first that exists): `meta.text` (chat rows made by `data convert`), `text`
(records, text format), the `<post>` in the last user message, the last user message, `prompt`.
Known limitation: near-duplicates that differ by more than normalisation (a changed number) are not grouped.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import SPLITS, DataError, iter_jsonl
from tickerpulse.data.records import write_jsonl

_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_NON_WORD = re.compile(r"[^\w$]+")
_POST = re.compile(r"<post>\s*(.*?)\s*</post>", re.S)


def normalize_text(text: str) -> str:
    """The grouping key: NFKC, lower case, URLs dropped, punctuation and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _URL.sub(" ", text)
    return _NON_WORD.sub(" ", text).strip()


def row_text(row: dict[str, Any]) -> str:
    """The text a row is about (see the module docstring); ValueError when it has none."""
    meta = row.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("text"), str):
        return meta["text"]
    if isinstance(row.get("text"), str):
        return row["text"]
    msgs = row.get("messages")
    if isinstance(msgs, list):
        users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            m = _POST.search(users[-1])
            return m.group(1) if m else users[-1]
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    raise ValueError("row has no text to group by (text, meta.text, a user message or prompt)")


def row_label(row: dict[str, Any]) -> str | None:
    meta = row.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("label"), str):
        return meta["label"]
    label = row.get("label")
    return label if isinstance(label, str) else None


def _item_id(row: dict[str, Any]) -> str:
    """The source item a row came from: convert's record id, the row id, else its raw text."""
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    return str(meta.get("record_id") or row.get("id") or row_text(row))


@dataclass
class SplitResult:
    """What `split_rows` did: counts per split and label, and the duplicate groups it kept together."""

    seed: int
    fractions: dict[str, float]
    rows: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    grouped_rows: int = 0  # rows whose normalised text another source item shares
    duplicate_groups: int = 0
    examples: list[list[str]] = field(default_factory=list)  # a few grouped texts, for the report
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def split_rows(rows: list[dict[str, Any]], valid: float = 0.1, test: float = 0.1, seed: int = 0,
               stratify: bool = True) -> tuple[dict[str, list[dict[str, Any]]], SplitResult]:
    """Assign whole duplicate groups to train/valid/test.

    Args:
        rows: any JSONL rows with a text (see `row_text`).
        valid, test: fractions of rows (each in [0, 1), together < 1).
        seed: changes the assignment; the same seed gives the same split.
        stratify: cut each label's groups separately (when rows carry labels).

    Returns:
        ({split: rows in input order}, SplitResult).
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"--valid {valid} and --test {test} must be in [0, 1) and sum to less than 1")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[normalize_text(row_text(row))].append(i)
    result = SplitResult(seed=seed, fractions={"train": round(1 - valid - test, 6), "valid": valid, "test": test})
    # a duplicate is another source item with the same text, not the per-ticker rows of one record
    dups = [idx for idx in groups.values() if len({_item_id(rows[i]) for i in idx}) > 1]
    result.duplicate_groups = len(dups)
    result.grouped_rows = sum(len(idx) for idx in dups)
    texts = [list(dict.fromkeys(row_text(rows[i]) for i in idx)) for idx in dups]
    result.examples = [t[:3] for t in sorted(texts, key=len, reverse=True)[:5]]

    strata: dict[str, list[str]] = defaultdict(list)
    for key, idx in groups.items():
        labels = Counter(row_label(rows[i]) for i in idx)
        stratum = (labels.most_common(1)[0][0] or "") if stratify else ""
        strata[stratum].append(key)
    assign: dict[int, str] = {}
    for stratum in sorted(strata):
        keys = sorted(strata[stratum], key=lambda k: _rank(seed, k))
        total = sum(len(groups[k]) for k in keys)
        want = {"test": round(total * test), "valid": round(total * valid)}
        taken = {"test": 0, "valid": 0}
        for key in keys:
            n = len(groups[key])
            # fill test, then valid, then train; a group goes where it still fits best
            split = next((s for s in ("test", "valid") if taken[s] + n / 2 <= want[s]), "train")
            if split != "train":
                taken[split] += n
            for i in groups[key]:
                assign[i] = split
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for i, row in enumerate(rows):
        out[assign[i]].append(row)
    for s in SPLITS:
        result.rows[s] = len(out[s])
        result.groups[s] = len({normalize_text(row_text(r)) for r in out[s]})
        result.labels[s] = dict(sorted(Counter(row_label(r) or "?" for r in out[s]).items()))
    return out, result


def _fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]  # streamed: a big input is not held twice
    return {"path": str(path), "sha256_16": digest}


def split_files(inputs: list[Path], out: Path, valid: float = 0.1, test: float = 0.1, seed: int = 0,
                stratify: bool = True) -> SplitResult:
    """Read JSONL files, split them, write `out/{train,valid,test}.jsonl` and `out/split.json`.

    Raises:
        DataError: a row with no text, as `file:line: reason`.
        FileNotFoundError: a missing input.
    """
    rows: list[dict[str, Any]] = []
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        for lineno, row in iter_jsonl(path):
            try:
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                row_text(row)
            except ValueError as exc:
                raise DataError(path, lineno, str(exc)) from None
            rows.append(row)
    if not rows:
        raise DataError(inputs[0], 0, "no rows to split")
    parts, result = split_rows(rows, valid, test, seed, stratify)
    result.inputs = [_fingerprint(p) for p in inputs]
    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        dest = out / f"{s}.jsonl"
        if parts[s]:
            write_jsonl(parts[s], dest)
            result.outputs[s] = str(dest)
        elif dest.exists():
            dest.unlink()  # a stale split from an earlier run would silently join training
    (out / "split.json").write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return result
