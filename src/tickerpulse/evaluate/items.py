"""Evaluation items from a JSONL file or a data folder, with their gold answers.

Accepted rows (one kind per file):
- chat `{"messages": [...]}`: the prompt is every message before the last assistant message, the gold
  answer is that assistant message. When the gold answers are sentiment JSON, gold label/score/ticker are
  parsed from them.
- completions `{"prompt", "completion"}`: the prompt becomes one user message (as mlx-lm does).
- labeled records `{"text", "label", "score"?, "tickers"?}` (the shared datasets): the prompt is built with
  `build_messages`, so the model sees exactly the served prompt.

`--limit N` takes a seeded random sample of N items, kept in file order (the shared files are clustered by
label, so the first N rows would not be representative).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tickerpulse.data.formats import DataError, check_row, iter_jsonl, split_files
from tickerpulse.task.contract import DEFAULT_PROMPT, LABELS, build_messages, parse_answer, post_of, resolve_target

Task = Literal["auto", "sentiment", "text"]
PromptTicker = Literal["first", "none"]
_LABEL_ALIASES = {"bearish": "negative", "bullish": "positive", "neg": "negative", "pos": "positive", "neu": "neutral"}


@dataclass
class EvalItem:
    """One prompt with its gold answer."""

    id: str
    messages: list[dict[str, str]]
    gold_text: str | None = None  # reference answer (chat/completions); None for labeled records
    gold_label: str | None = None
    gold_score: float | None = None
    gold_tickers: list[str] | None = None  # None: unknown (no ticker metrics)
    ticker: str | None = None  # the symbol of the target (None: an entity without a known symbol, or the market)
    target: str | None = None  # what the prompt asks about: a symbol, an entity name, None = the market; what a served labeler is asked
    text: str = ""  # what a human reads in reports: the post, or the last user message
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_data_file(data: str | Path, split: str = "test") -> Path:
    """A .jsonl file as is, or `<folder>/<split>.jsonl`.

    Raises:
        FileNotFoundError: naming what the folder holds.
    """
    path = Path(data)
    if path.is_file():
        return path
    if path.is_dir():
        files = split_files(path)
        if split in files:
            return files[split]
        have = ", ".join(sorted(files)) or "no train/valid/test.jsonl"
        raise FileNotFoundError(f"{path} has no {split}.jsonl (it has: {have}); pass --split or a file")
    raise FileNotFoundError(f"data {path} not found (expected a .jsonl file or a folder with {split}.jsonl)")


def load_items(
    data: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    task: Task = "auto",
    prompt_ticker: PromptTicker = "first",
    prompt_version: str = DEFAULT_PROMPT,
) -> tuple[list[EvalItem], Literal["sentiment", "text"], dict[str, Any]]:
    """Read items and decide the task.

    Args:
        data: a .jsonl file or a folder (then `<split>.jsonl`).
        limit: evaluate a seeded random sample of this many items (file order kept).
        task: "auto" = sentiment when every gold answer is a valid sentiment answer (or the rows are labeled
            records), text when none is.
        prompt_ticker: for labeled records, put the first gold ticker in the prompt ("first") or none.

    Returns:
        (items, task, info) where info has path, rows (before --limit), kind and a fingerprint of the ids.

    Raises:
        DataError: a broken row, a row of another kind, or gold answers that are only partly sentiment JSON.
    """
    path = resolve_data_file(data, split)
    items: list[EvalItem] = []
    kind: str | None = None
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(row).__name__}")
        row_kind = "chat" if "messages" in row else "completions" if "prompt" in row else "labeled" if "text" in row else None
        if row_kind is None:
            raise DataError(path, lineno, "need 'messages' (chat), 'prompt'+'completion', or 'text'+'label' (labeled record)")
        if kind is None:
            kind = row_kind
        elif row_kind != kind:
            raise DataError(path, lineno, f"row is a {row_kind} row but the file started with {kind} rows")
        items.append(_item(row, row_kind, path, lineno, prompt_ticker, prompt_version))
    if not items:
        raise DataError(path, 0, "file is empty")
    rows = len(items)
    resolved = _decide_task(items, kind or "", task, path)
    items = seeded_sample(items, limit, seed)
    fingerprint = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()[:16]
    info = {"path": str(path), "rows": rows, "n": len(items), "kind": kind, "fingerprint": fingerprint}
    return items, resolved, info


def _item(row: dict[str, Any], kind: str, path: Path, lineno: int, prompt_ticker: str, version: str) -> EvalItem:
    item_id = str(row.get("id", f"{path.stem}-{lineno}"))
    if kind == "labeled":
        return _labeled(row, item_id, path, lineno, prompt_ticker, version)
    try:
        check_row(row, "chat" if kind == "chat" else "completions")
    except ValueError as exc:
        raise DataError(path, lineno, str(exc)) from None
    if kind == "completions":
        messages = [{"role": "user", "content": row["prompt"]}]
        gold = row["completion"]
    else:
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m.get("role") == "assistant")
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in msgs[:last]]
        gold = msgs[last].get("content") or ""
        if not any(m["role"] == "user" for m in messages):
            raise DataError(path, lineno, "no user message before the last assistant message")
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    post = post_of(user)
    return EvalItem(id=item_id, messages=messages, gold_text=gold, text=user if post is None else post, line=lineno)


def _labeled(row: dict[str, Any], item_id: str, path: Path, lineno: int, prompt_ticker: str, version: str) -> EvalItem:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, lineno, "'text' must be a non-empty string")
    label = row.get("label")
    if label is None:
        raise DataError(path, lineno, "a labeled record needs 'label' (the gold answer)")
    key = _LABEL_ALIASES.get(str(label).strip().lower(), str(label).strip().lower())
    if key not in LABELS:
        raise DataError(path, lineno, f"label {label!r} is not one of {list(LABELS)} (or bearish/bullish)")
    score = row.get("score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise DataError(path, lineno, f"score {score!r} is not a number") from None
    tickers = row.get("tickers")
    if tickers is not None and not (isinstance(tickers, list) and all(isinstance(t, str) for t in tickers)):
        raise DataError(path, lineno, "'tickers' must be a list of strings")
    target = _first_target(row, tickers) if prompt_ticker == "first" else None
    try:
        shown, ticker = resolve_target(target)
    except ValueError as exc:
        raise DataError(path, lineno, str(exc)) from None
    return EvalItem(id=item_id, messages=build_messages(text, shown, version=version), gold_label=key,
                    gold_score=score, gold_tickers=list(tickers) if tickers is not None else None, ticker=ticker,
                    target=shown, text=text, line=lineno)


def _first_target(row: dict[str, Any], tickers: list[str] | None) -> str | None:
    """The target a labeled record asks about: its first annotated target (`targets`, a symbol or an entity
    name; the recipe's FiQA and FinEntity records), else its first ticker, else None (the market)."""
    targets = row.get("targets")
    if isinstance(targets, list) and targets and isinstance(targets[0], dict) and isinstance(targets[0].get("target"), str):
        return targets[0]["target"]
    return tickers[0] if tickers else None


def _decide_task(items: list[EvalItem], kind: str, task: Task, path: Path) -> Literal["sentiment", "text"]:
    if kind == "labeled":
        if task == "text":
            raise DataError(path, 0, "labeled records have no reference text: they can only be evaluated as --task sentiment")
        return "sentiment"
    if task == "text":
        return "text"
    parsed = [(it, *parse_answer(it.gold_text or "")) for it in items]
    bad = [(it, err) for it, ans, err in parsed if ans is None]
    if task == "auto" and len(bad) == len(items):
        return "text"
    if bad:
        it, err = bad[0]
        raise DataError(path, it.line, f"gold answer is not a valid sentiment answer ({err}); "
                        f"{len(bad)} of {len(items)} gold answers are not (use --task text to compare as text)")
    for it, ans, _ in parsed:
        it.gold_label, it.gold_score = ans.sentiment, ans.score
        it.gold_tickers = [ans.ticker] if ans.ticker else []
        it.ticker = ans.ticker
        it.target = ans.target if ans.target is not None else ans.ticker
    return "sentiment"


def seeded_sample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    """A seeded random sample of `limit` items in their original order (all when limit is None or larger):
    the shared files are clustered by label, so a head would not be representative."""
    if limit is None or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]
