"""The one deterministic splitter: whole groups of duplicate text to named splits, stratified by label, seeded.

`data split` (JSONL files of any format), distill (its per-split queues) and the recipe (the shared datasets'
splits and stratified samples) all split with `split_groups`, so no stage can put one text in two splits:

- groups (`group_keys`): rows whose normalised text is identical (case, URLs, punctuation and spacing
  ignored: a retweet, the same headline with another t.co link, one post converted once per ticker), and
  optionally near-duplicate clusters (`near_dup_threshold` < 1: character 5-gram Jaccard, see
  `data.near_duplicates`); a text that normalises to nothing is a group of its own;
- strata: a group's label is its most common one; each label's groups are cut separately (stratified);
- order: groups are ranked by a seeded hash of their key, so the same rows and seed give the same split;
- quotas: each split's share of the rows (`fractions`; counts become fractions of the rows), apportioned
  over the labels by largest remainder; a group joins the first split in `fractions` order whose quota still
  holds at least half of it, else the `rest` split (so quotas of single rows are met exactly);
- no empty split: a wanted split left empty gets the last group dealt to the split holding the most groups
  (only ever on a tiny pool), so a small input still fills every wanted split when it has enough groups.

Texts of `data split` rows are read from (first that exists): `meta.text` (chat rows made by `data convert`
or distill), `text` (records, text format), the `<post>` in the last user message, the last user message,
`prompt`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import SPLITS, DataError, iter_jsonl
from tickerpulse.data.records import write_jsonl
from tickerpulse.task.contract import post_of

_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_NON_WORD = re.compile(r"[^\w$]+")


def normalize_text(text: str) -> str:
    """The grouping key: NFKC, lower case, URLs dropped, punctuation and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _URL.sub(" ", text)
    return _NON_WORD.sub(" ", text).strip()


def group_keys(texts: Sequence[str], near_dup_threshold: float = 1.0, seed: int = 0) -> list[str]:
    """The split group of each text: its normalised text (a unique key when that is empty); with
    `near_dup_threshold` < 1 the key of the first text of its near-duplicate cluster."""
    norms = [normalize_text(t) for t in texts]
    keys = [n or f"\x00{i}" for i, n in enumerate(norms)]
    if near_dup_threshold >= 1.0:
        return keys
    from tickerpulse.data.near_duplicates import near_duplicate_clusters

    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    uniq = list(first)  # one text per exact group: clusters join groups, never split one
    cluster = near_duplicate_clusters([norms[first[k]] for k in uniq], near_dup_threshold, seed)
    root = {k: uniq[c] for k, c in zip(uniq, cluster, strict=True)}
    return [root[k] for k in keys]


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _apportion(total: int, weights: dict[str, int]) -> dict[str, int]:
    """`total` shared over strata in proportion to `weights` (largest remainder; ties by stratum name)."""
    n = sum(weights.values())
    if not n:
        return dict.fromkeys(weights, 0)
    exact = {k: total * w / n for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[: total - sum(out.values())]:
        out[k] += 1
    return out


def split_groups(keys: Sequence[str], labels: Sequence[str | None] | None, fractions: Mapping[str, float],
                 seed: int = 0, rest: str = "train") -> dict[str, list[int]]:
    """Deal whole groups to splits (the module docstring's rule).

    Args:
        keys: the group of each row (`group_keys`); rows with one key always share a split.
        labels: each row's label for stratification (None: one stratum).
        fractions: split -> share of all rows, filled in this order; the remainder goes to `rest`.
        seed: changes the assignment; the same seed gives the same split.
        rest: the split that takes every group no quota took.

    Returns:
        split -> row indices in seeded order (a shuffle: the first n are a random sample of the split), for
        every split in `fractions` and `rest`.

    Raises:
        ValueError: a negative fraction, or fractions summing over 1.
    """
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise ValueError(f"split fractions {dict(fractions)} must be >= 0 and sum to at most 1")
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, idx in members.items():
        top = Counter(labels[i] for i in idx).most_common(1)[0][0] if labels is not None else None
        strata[top or ""].append(key)
    rank = {key: _rank(seed, key) for key in members}
    order = [s for s in fractions if s != rest]
    size = {st: sum(len(members[k]) for k in ks) for st, ks in strata.items()}
    want = {s: _apportion(round(fractions[s] * len(keys)), size) for s in order}
    dealt: dict[str, list[str]] = {s: [] for s in (*order, rest)}
    for stratum in sorted(strata):
        taken = dict.fromkeys(order, 0)
        for key in sorted(strata[stratum], key=rank.__getitem__):
            n = len(members[key])
            # the first split whose quota still holds at least half the group (quotas end within half a group)
            split = next((s for s in order if taken[s] + n / 2 <= want[s][stratum]), rest)
            if split != rest:
                taken[split] += n
            dealt[split].append(key)
    wanted = [s for s in order if fractions[s] > 0]
    if sum(fractions[s] for s in order) < 1 - 1e-9:
        wanted.append(rest)
    for split in wanted:
        # a donor keeps a group if it is wanted itself; leftovers of an unwanted `rest` can all go
        donors = [s for s in dealt if len(dealt[s]) >= (2 if s in wanted else 1)]
        if not dealt[split] and donors:
            donor = max(donors, key=lambda s: len(dealt[s]))
            dealt[split].append(dealt[donor].pop())
    return {s: sorted((i for k in ks for i in members[k]), key=lambda i: (rank[keys[i]], i)) for s, ks in dealt.items()}


def sample(keys: Sequence[str], labels: Sequence[str | None] | None, n: int | None, seed: int = 0) -> list[int]:
    """A seeded, stratified sample of `n` row indices (input order); all rows when n is None. Groups are
    taken whole, except the group ranked last when the quota overshoots: it is cut to give exactly `n` rows."""
    if n is None or n >= len(keys):
        return list(range(len(keys)))
    parts = split_groups(keys, labels, {"keep": n / len(keys)}, seed, rest="drop")
    return sorted(parts["keep"][:n])  # seeded order: an overshoot cuts the group ranked last


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
            post = post_of(users[-1])
            return users[-1] if post is None else post
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


def split_rows(rows: list[dict[str, Any]], valid: float = 0.1, test: float = 0.1, seed: int = 0,
               stratify: bool = True, near_dup_threshold: float = 1.0
               ) -> tuple[dict[str, list[dict[str, Any]]], SplitResult]:
    """Assign whole duplicate groups of JSONL rows to train/valid/test (`split_groups`).

    Args:
        rows: any JSONL rows with a text (see `row_text`).
        valid, test: fractions of rows (each in [0, 1), together < 1).
        seed: changes the assignment; the same seed gives the same split.
        stratify: cut each label's groups separately (when rows carry labels).
        near_dup_threshold: also keep near-duplicate clusters together (< 1; see `group_keys`).

    Returns:
        ({split: rows in input order}, SplitResult).
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"--valid {valid} and --test {test} must be in [0, 1) and sum to less than 1")
    texts = [row_text(row) for row in rows]
    keys = group_keys(texts, near_dup_threshold, seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    result = SplitResult(seed=seed, fractions={"train": round(1 - valid - test, 6), "valid": valid, "test": test})
    # a duplicate is another source item with the same text, not the per-ticker rows of one record
    dups = [idx for idx in groups.values() if len({_item_id(rows[i]) for i in idx}) > 1]
    result.duplicate_groups = len(dups)
    result.grouped_rows = sum(len(idx) for idx in dups)
    examples = [list(dict.fromkeys(texts[i] for i in idx)) for idx in dups]
    result.examples = [t[:3] for t in sorted(examples, key=len, reverse=True)[:5]]

    labels = [row_label(row) for row in rows] if stratify else None
    parts = split_groups(keys, labels, {"test": test, "valid": valid}, seed, rest="train")
    out = {s: [rows[i] for i in sorted(parts[s])] for s in SPLITS}
    for s in SPLITS:
        result.rows[s] = len(out[s])
        result.groups[s] = len({keys[i] for i in parts[s]})
        result.labels[s] = dict(sorted(Counter(row_label(r) or "?" for r in out[s]).items()))
    return out, result


def _fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]  # streamed: a big input is not held twice
    return {"path": str(path), "sha256_16": digest}


def split_files(inputs: list[Path], out: Path, valid: float = 0.1, test: float = 0.1, seed: int = 0,
                stratify: bool = True, near_dup_threshold: float = 1.0) -> SplitResult:
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
    parts, result = split_rows(rows, valid, test, seed, stratify, near_dup_threshold)
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
