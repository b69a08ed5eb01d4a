"""The question record and the one rule for "which ticker does this row ask about?".

A `Question` is what every stage asks a labeler: a text, the target it asks about (a symbol or an entity
name; None = the market / the text as a whole), that target's symbol when known (`contract.resolve_target`)
and, when known, the gold label and score for that target. Data conversion, distillation,
the recipe's splits, evaluation and the server all turn rows into questions with `questions_of`, so a row is
asked about the same ticker wherever it goes:

- the row's own symbols if it names any (`tickers`), else the symbols `extract_tickers` finds in the text
  (company names too only when asked, `names=True`: the stream asks; data, distill, the recipe and the
  server do not), keeping only those the answer schema accepts, in order of first mention;
- one question per symbol, with the row's gold; a text with none is one question about the market (None);
- except a row with per-target gold (FiQA's and FinEntity's `target_gold`): it asks about its annotated
  targets, in order (a symbol, or the entity name as annotated), each with that target's gold label and score
  (None for a label-only dataset such as FinEntity);
- at most `limit` questions (None: all): the recipe and distill ask the first, `data convert` each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.task.contract import TICKER_RE, resolve_target
from tickerpulse.task.tickers import extract_tickers


@dataclass(frozen=True)
class Question:
    """One (text, target) question, with its gold judgement when known. `target` defaults to `ticker`."""

    id: str
    text: str
    ticker: str | None = None
    label: str | None = None
    score: float | None = None
    tickers: tuple[str, ...] = field(default_factory=tuple)  # every symbol the text names
    source: str = ""
    group: str = ""  # the dataset (or any grouping a report breaks results down by)
    target: str | None = None  # the symbol or entity name asked about (what the prompt shows)

    def __post_init__(self) -> None:
        if self.target is None and self.ticker is not None:
            object.__setattr__(self, "target", self.ticker)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "target": self.target, "ticker": self.ticker, "label": self.label,
                "score": self.score, "tickers": list(self.tickers), "source": self.source, "group": self.group}


def valid_symbol(symbol: str) -> bool:
    """Can the answer schema carry this symbol as its `ticker`?"""
    return bool(TICKER_RE.match(symbol))


def clean_symbol(value: Any) -> str | None:
    """'$aapl' -> 'AAPL'; None when it is not a symbol the answer schema accepts (e.g. a company name)."""
    if not isinstance(value, str):
        return None
    sym = value.strip().lstrip("$").upper()
    return sym if valid_symbol(sym) else None


def symbols_of(text: str, tickers: Sequence[str] | None = None, *, names: bool = False) -> list[str]:
    """The symbols a text asks about: its given `tickers` if any, else the extracted ones (schema-valid only;
    `names`: company names count too)."""
    found = list(tickers) if tickers else extract_tickers(text, names=names)
    return list(dict.fromkeys(sym for t in found if (sym := clean_symbol(t))))


def questions_of(text: str, *, id: str = "", tickers: Sequence[str] | None = None, label: str | None = None,
                 score: float | None = None, target_gold: Mapping[str | None, tuple[str, float | None]] | None = None,
                 source: str = "", group: str = "", limit: int | None = 1, names: bool = False) -> list[Question]:
    """The questions a row asks (the module docstring's rule)."""
    symbols = symbols_of(text, tickers, names=names)
    asked: list[str | None] = list(target_gold) if target_gold else list(symbols)
    asked = (asked[:limit] if limit is not None else asked) or [None]
    out = []
    for key in asked:
        q_label, q_score = label, score
        if target_gold and key in target_gold:
            q_label, q_score = target_gold[key]
        target, sym = resolve_target(key)
        qid = id if len(asked) == 1 else f"{id}:{key}"
        out.append(Question(qid, text, sym, q_label, q_score, tuple(symbols), source, group, target))
    return out
