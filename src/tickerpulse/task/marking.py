"""Target markers: the mentions of the asked target inside the post, wrapped in `«` `»`.

A prompt whose spec says `mark_target: true` (sentiment-v3) shows the post with each mention of the target
marked, so "Apple and «$MSFT» both beat estimates; $INTC guides lower" asked about MSFT and the same post
asked about INTC differ where it matters, not only in the `Target:` line: the entity-marker idea of
relation classification and target-dependent sentiment (TD-BERT), for a student that must tell apart
the targets of one post. `«` and `»` are one token each for SmolLM2's tokenizer.

A mention is, for a symbol target, the symbol as a word (`$msft` in any case, `MSFT` as asked, also where
the stream's bare-symbol rule would not count it: the caller asked) and what `tickers.find_mentions(names=True)`
maps to that symbol (`Microsoft`); for a name target, every case-insensitive, word-bounded
occurrence of the name as asked, plus the mentions of its symbol when the name table knows one. A post's
own `«` `»` are removed first, so a post cannot fake a marker and marking a marked post changes nothing (a
chat row's post, read back by evaluation, is marked once). Linear in the post's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from tickerpulse.task.tickers import Mention, find_mentions

OPEN, CLOSE = "\u00ab", "\u00bb"
_MARKS = str.maketrans({OPEN: None, CLOSE: None})


@lru_cache(maxsize=4096)
def _symbol_pattern(symbol: str) -> re.Pattern[str]:
    sym = re.escape(symbol)
    return re.compile(r"(?<![\w$])(?:\$(?i:" + sym + r")|" + sym + r")(?!\w)")


@lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in name.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.I)


def target_spans(text: str, shown: str | None, ticker: str | None,
                 mentions: Sequence[Mention] | None = None) -> list[tuple[int, int]]:
    """(start, end) of each mention in `text` of the target `contract.resolve_target` resolved to (shown,
    ticker); sorted, non-overlapping. `mentions`: `find_mentions(text, names=True)` when the caller has it
    already (evidence needs all of them anyway), else found here."""
    if shown is None:
        return []
    pattern = _symbol_pattern(shown) if shown == ticker else _name_pattern(shown)
    spans = [m.span() for m in pattern.finditer(text)]
    if ticker:
        found = find_mentions(text, names=True) if mentions is None else mentions
        spans += [(m.start, m.end) for m in found if m.symbol == ticker]
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def unmark(text: str) -> str:
    """`text` without `«` `»`: a marked post as the caller sent it (up to markers of its own)."""
    return text.translate(_MARKS)


def mark_target(text: str, shown: str | None, ticker: str | None) -> str:
    """`text` with its own `«` `»` removed and every mention of the target (shown, ticker) wrapped in `«` `»`."""
    text = unmark(text)
    parts, at = [], 0
    for s, e in target_spans(text, shown, ticker):
        parts += [text[at:s], OPEN, text[s:e], CLOSE]
        at = e
    return "".join(parts) + text[at:]
