"""Token-length statistics of a data folder as a given model will see it (its chat template applied).

Lengths are counted the way mlx-lm builds training sequences: chat rows through the chat template (with
`tools` when present), completions as a user/assistant pair when the tokenizer has a chat template (else
prompt + completion), text rows as is plus EOS. Rows longer than `max_seq_length` get truncated in
training, which can cut off the answer: the report counts them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import Format, load_jsonl, split_files


@dataclass
class SplitStats:
    """Numbers for one split file."""

    split: str
    path: str
    format: str
    rows: int
    p50: int = 0
    p90: int = 0
    p99: int = 0
    max: int = 0
    mean: float = 0.0
    over_max: int = 0
    total_tokens: int = 0
    labels: dict[str, int] = field(default_factory=dict)


def row_to_text(tok: Any, row: dict[str, Any], fmt: Format) -> tuple[str, bool]:
    """(text to tokenize, whether the tokenizer should add its special tokens)."""
    has_template = bool(getattr(tok, "chat_template", None))
    if fmt == "chat":
        if not has_template:
            raise ValueError("chat data needs a model with a chat template")
        kwargs = {"tools": row["tools"]} if row.get("tools") else {}
        return tok.apply_chat_template(row["messages"], tokenize=False, **kwargs), False
    if fmt == "completions":
        if has_template:
            msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
            return tok.apply_chat_template(msgs, tokenize=False), False
        return row["prompt"] + row["completion"] + (tok.eos_token or ""), True
    return row["text"] + (tok.eos_token or ""), True


def token_lengths(tok: Any, rows: list[dict[str, Any]], fmt: Format) -> list[int]:
    """Token count of every row (batched through the fast tokenizer)."""
    texts: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
    for i, row in enumerate(rows):
        text, special = row_to_text(tok, row, fmt)
        texts[special].append((i, text))
    lengths = [0] * len(rows)
    for special, items in texts.items():
        if not items:
            continue
        enc = tok([t for _, t in items], add_special_tokens=special)["input_ids"]
        for (i, _), ids in zip(items, enc, strict=True):
            lengths[i] = len(ids)
    return lengths


def _label(row: dict[str, Any]) -> str | None:
    meta = row.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("label"), str):
        return meta["label"]
    return row.get("label") if isinstance(row.get("label"), str) else None


def folder_stats(folder: str | Path, model: str, max_seq_length: int = 2048) -> list[SplitStats]:
    """Stats for each split of a folder (or one .jsonl file).

    Raises:
        DataError: a broken row (file:line: reason).
        FileNotFoundError: no train/valid/test.jsonl in the folder.
        ModelNotFound: the model cannot be resolved.
    """
    import numpy as np

    from tickerpulse.models.loading import load_tokenizer

    folder = Path(folder)
    files = {folder.stem: folder} if folder.is_file() else split_files(folder)
    if not files:
        raise FileNotFoundError(f"no train/valid/test.jsonl in {folder}")
    loaded = {split: load_jsonl(path) for split, path in files.items()}  # a broken row fails before the slow part
    tok = load_tokenizer(model)
    out = []
    for split, path in files.items():
        rows, fmt = loaded[split]
        lengths = np.array(token_lengths(tok, rows, fmt))
        labels = Counter(lb for r in rows if (lb := _label(r)))
        out.append(SplitStats(
            split=split, path=str(path), format=fmt, rows=len(rows),
            p50=int(np.percentile(lengths, 50)), p90=int(np.percentile(lengths, 90)),
            p99=int(np.percentile(lengths, 99)), max=int(lengths.max()), mean=float(lengths.mean()),
            over_max=int((lengths > max_seq_length).sum()), total_tokens=int(lengths.sum()),
            labels=dict(sorted(labels.items())),
        ))
    return out
