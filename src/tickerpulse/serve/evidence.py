"""Evidence reasoning: the words of a post that most move the chosen label's probability for the target.

A student trained without reasoning text (the recipe's: its serving.json says `"reasoning": "evidence"`) has
nothing useful to generate after the label. Its reasoning mode answers instead with evidence found by
occlusion: the post is scored again by the engine's label pass (`SentimentEngine._label_pass`, batch
independent) with a span of words removed, and the span whose removal lowers p(label) the most is the
reasoning, copied verbatim from the post. The label and score stay the label pass's (fast mode's).

Search, all candidates of all items of a call batched into one label pass per round, at most 58 scored rows
per item (12 segments + 32 words + 2 per extension round) whatever the post's length:
1. a post with at most `MAX_WORD_CANDIDATES` candidate words: each word alone; a longer one: `SEGMENTS`
   contiguous segments first, then the words (at most `MAX_WORD_CANDIDATES`, evenly picked) of the segment
   whose removal dropped p(label) the most;
2. greedy extension of the best word to a neighbour (left or right, 2 candidates a round) while the drop
   grows, up to `MAX_SPAN_WORDS` words.

The target's own mention (`$MSFT`, `MSFT`, `Microsoft`, the words of an entity name), other companies'
mentions (`$INTC`, `Apple`: evidence about MSFT that quotes "$INTC guides" reads as being about Intel), links
and bare punctuation are never evidence: no span holds them. The reasoning is "" when no removal lowers p(label).

Limitations: only what the model sees is searched (`sanitize_text`'s first 2000 characters; a post cut to
`max_text_tokens` keeps candidates past the cut, whose removal changes nothing); occlusion measures what the
model relies on, which is not always what a human would quote; a span grows from its best single word, so
a phrase none of whose words matters alone is not found; a coarse segment is removed whole, the target's
mention inside it included (only its words are ever answered).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.task.contract import LABELS, MAX_REASONING_CHARS, resolve_target
from tickerpulse.task.marking import target_spans
from tickerpulse.task.tickers import Mention, find_mentions

MAX_WORD_CANDIDATES = 32
SEGMENTS = 12
MAX_SPAN_WORDS = 8
SEARCH_CHARS = 2000  # what `sanitize_text` keeps of a post: words past it are never seen by the model

_WORD = re.compile(r"\S+")
_LINK = re.compile(r"^\W*(?:https?://|www\.)", re.I)
_EDGE = re.compile(r"^[^\w$]+|[^\w]+$")


def _norm(word: str) -> str:
    """A word as mention matching compares it: lower case, no edge punctuation, `$`, or possessive `'s`."""
    w = _EDGE.sub("", word).lower().lstrip("$")
    return w[:-2] if w.endswith(("'s", "\u2019s")) else w


def target_mentions(text: str, words: Sequence[tuple[int, int]], target: str | None,
                    mentions: Sequence[Mention] | None = None) -> set[int]:
    """Indexes of the words that name the target: the mentions sentiment-v3 marks (`task.marking.target_spans`:
    `$MSFT`, `MSFT`, `Microsoft`, the name as asked) and any single word of an entity name as asked.
    `mentions`: the text's `find_mentions(names=True)` when the caller has them."""
    shown, ticker = resolve_target(target)
    if shown is None:
        return set()
    keys = {k for k in (_norm(w) for w in shown.split()) if len(k) >= 2}
    if ticker:
        keys.add(ticker.lower())
    inside = _words_in(words, target_spans(text, shown, ticker, mentions))
    return {i for i, (s, e) in enumerate(words) if _norm(text[s:e]) in keys} | inside


def _words_in(words: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> set[int]:
    """Indexes of the words that overlap any of the character spans (one pass over a character mask)."""
    covered = bytearray(max((e for _, e in words), default=0))
    for s, e in spans:
        covered[s:e] = b"\x01" * (min(e, len(covered)) - min(s, len(covered)))
    return {i for i, (s, e) in enumerate(words) if any(covered[s:e])}


def unquotable(text: str, words: Sequence[tuple[int, int]], target: str | None) -> set[int]:
    """Indexes of the words no evidence may hold: the target's mentions, other tickers and company names
    (`task.tickers.find_mentions`), links and bare punctuation (a URL or a dash tells a reader nothing, even
    when the model leans on it)."""
    text = text[:SEARCH_CHARS]  # what the words index; one mention search serves the target and the others
    mentions = find_mentions(text, names=True)
    others = _words_in(words, [(m.start, m.end) for m in mentions])
    return target_mentions(text, words, target, mentions) | others | {
        i for i, (s, e) in enumerate(words) if _LINK.match(text[s:e]) or not any(ch.isalnum() for ch in text[s:e])}


@dataclass
class _Search:
    """One item's occlusion search state. Spans are (first word, last word) inclusive."""

    text: str
    target: str | None
    label: int
    base: float  # p(label) of the whole post
    words: list[tuple[int, int]]
    banned: set[int]
    best: tuple[int, int] | None = None
    best_drop: float = 0.0
    pending: list[tuple[int, int]] = field(default_factory=list)

    def without(self, span: tuple[int, int]) -> str:
        s, e = self.words[span[0]][0], self.words[span[1]][1]
        return (self.text[:s].rstrip() + " " + self.text[e:].lstrip()).strip()

    def free(self) -> list[int]:
        return [i for i in range(len(self.words)) if i not in self.banned]


def _spread(ids: list[int], k: int) -> list[int]:
    """At most k of `ids`, evenly spaced (all of them when they fit)."""
    if len(ids) <= k:
        return ids
    return [ids[round(j * (len(ids) - 1) / (k - 1))] for j in range(k)]


def _segments(free: list[int], n: int) -> list[tuple[int, int]]:
    """`free` cut into at most n contiguous runs of about equal size, as (first, last) word spans."""
    size = -(-len(free) // n)
    return [(free[i], free[min(i + size, len(free)) - 1]) for i in range(0, len(free), size)]


def _round(engine: Any, adapter: str | None, searches: list[_Search]) -> list[list[float]]:
    """Score every search's pending spans in one batched label pass; the drops of p(label), per search."""
    jobs = [(k, span) for k, s in enumerate(searches) for span in s.pending]
    if not jobs:
        return [[] for _ in searches]
    encoded = [engine.encode_item(searches[k].without(span), searches[k].target) for k, span in jobs]
    engine.stats["evidence_rows"] += len(jobs)
    probs = engine._label_pass(adapter, encoded)
    drops: list[list[float]] = [[] for _ in searches]
    for (k, _), p in zip(jobs, probs):
        s = searches[k]
        drops[k].append(s.base - float(p[s.label]))
    return drops


def _take_best(s: _Search, drops: list[float]) -> tuple[int, int] | None:
    """The pending span with the largest drop if it beats the current best (then it becomes the best)."""
    if not drops:
        return None
    j = max(range(len(drops)), key=drops.__getitem__)
    if drops[j] > s.best_drop:
        s.best, s.best_drop = s.pending[j], drops[j]
        return s.best
    return None


def evidence(engine: Any, adapter: str | None, items: Sequence[tuple[str, str | None]],
             probs: Sequence[Any]) -> list[str]:
    """The evidence span (verbatim from the text, or "") per (text, target) item. Call inside
    `engine.rt.use(adapter)`; `probs` are the items' label-pass probabilities (they fix each label)."""
    searches: list[_Search] = []
    for (text, target), p in zip(items, probs):
        label = int(max(range(len(LABELS)), key=lambda i: float(p[i])))
        words = [(m.start(), m.end()) for m in _WORD.finditer(text[:SEARCH_CHARS])]
        searches.append(_Search(text, target, label, float(p[label]), words, unquotable(text, words, target)))
    # 1. words (short posts) or segments (long posts)
    for s in searches:
        free = s.free()
        s.pending = ([(i, i) for i in free] if len(free) <= MAX_WORD_CANDIDATES else _segments(free, SEGMENTS))
    coarse = [len(s.free()) > MAX_WORD_CANDIDATES for s in searches]
    for s, d in zip(searches, _round(engine, adapter, searches)):
        _take_best(s, d)
    # ... then the words of each long post's best segment
    for s, long in zip(searches, coarse):
        inside = [i for i in s.free() if s.best and s.best[0] <= i <= s.best[1]] if long else []
        s.pending = [(i, i) for i in _spread(inside, MAX_WORD_CANDIDATES)]
        if long:
            s.best, s.best_drop = None, 0.0  # a segment is no answer: its best word must earn the drop again
    for s, d in zip(searches, _round(engine, adapter, searches)):
        _take_best(s, d)
    # 2. greedy extension to neighbouring words while the drop grows; a span never takes in the target
    growing = [s.best is not None for s in searches]
    for _ in range(MAX_SPAN_WORDS - 1):
        for s, go in zip(searches, growing):
            s.pending = []
            if go and s.best is not None:
                a, b = s.best
                s.pending = [span for span, edge in (((a - 1, b), a - 1), ((a, b + 1), b + 1))
                             if 0 <= edge < len(s.words) and edge not in s.banned]
        if not any(s.pending for s in searches):
            break
        growing = [_take_best(s, d) is not None for s, d in zip(searches, _round(engine, adapter, searches))]
    return ["" if s.best is None else s.text[s.words[s.best[0]][0]: s.words[s.best[1]][1]][:MAX_REASONING_CHARS]
            for s in searches]
