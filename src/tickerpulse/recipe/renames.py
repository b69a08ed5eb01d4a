"""Renamed copies of FinEntity paragraphs: the same news about other companies, each entity with its own gold.

The paragraphs whose entities disagree in gold label are few (~70 in our train split) and are what teaches
the student to answer about the target rather than the paragraph; `conflict_repeat` trains them again as
identical copies. A renamed copy keeps every word that carries the sentiment and the role of each entity in
the sentence and swaps the company names for other listed companies, so it cannot be answered from memory of
the names (entity-swap augmentation, as in aspect-based sentiment work). The recipe keeps it off
(`splits.renamed_copies: 0`): 1 + 4 renamed copies taught the entity level less than 5 identical ones, since
the real names carry signal (data vendors and platforms are neutral), and moved no sentence set
(docs/experiments.md run V).

Renamed: an entity that is a company, by evidence: it carries a ticker, the name table knows its name, or it
is capitalised with no digit and is no index or sector ("S&P 500", "Healthcare" keep their names). Public
bodies keep their names whatever the name table says, since swapping one for a company changes what the
sentence means: exchanges, central banks, regulators, ministries and trade associations ("Nasdaq", "NYSE",
"ECB", "FAA", "China Passenger Car Association"). Each mention of it in the text (`task.marking.target_spans`:
the name as a word in any case, and the mentions of its symbol) and a Reuters code right after a mention
(`<TWTR.N>`) take the new company's name and symbol. A paragraph in which two entities' mentions
overlap ("Wedbush" inside "Wedbush Securities") or nothing can be renamed gives its copy unrenamed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from tickerpulse.data.records import Record, Target
from tickerpulse.task.marking import target_spans
from tickerpulse.task.names import company_names, symbol_of_name

# entity names that are markets, not companies: indices and sectors (FinEntity annotates both)
_MARKET = re.compile(r"\b(?:index|indices|average|composite|s&p|stoxx|dow|nikkei|ftse|dax|sox|russell|"
                     r"sector|sectors|healthcare|health care|materials|staples|energy|utilities|financials|"
                     r"industrials|real estate|tech|technology|services|discretionary|banks|"
                     r"treasuries|bitcoin|crude|gold|oil|brent|wti|west texas|kospi|topix|spx|ixic|bluechips|stocks|"
                     r"miners)\b", re.I)
# entity names that are public bodies and associations: exchanges, central banks, regulators, governments,
# unions, institutes (FinEntity annotates them beside companies; the name table knows some, e.g. Nasdaq).
# Checked before the name table, so a word here needs no twin in _MARKET ("nasdaq", "treasury")
_BODY = re.compile(r"\b(?:exchange|stock market|central bank|reserve|bank of (?:canada|england|italy|japan|france|"
                   r"spain|korea|russia|mexico|israel)|norges|fed|fomc|ecb|boj|boe|pboc|snb|rba|rbi|rbnz|imf|"
                   r"monetary fund|opec|sec|fda|faa|ftc|fcc|cftc|finra|consob|doj|epa|fbi|nasa|roscosmos|ecdc|"
                   r"nhtsa|ntsb|irs|nyse|nasdaq|lse|hkex|white house|weather service|statistics|commission|"
                   r"administration|agency|authority|ministry|department|bureau|council|board|chamber|"
                   r"association|federation|institute|government|parliament|congress|senate|court|"
                   r"regulator|european union|union$|teamsters|metall|fifa|amnesty|organization|organisation|"
                   r"treasury)\b", re.I)
_RIC = re.compile(r"\s*<[A-Za-z0-9.^=_-]{1,16}>")  # a Reuters instrument code after a mention: " <TWTR.N>"


def _capitalised(name: str) -> bool:
    """Starts upper case and holds no digit: how a company's name is written (not "3M", "S&P 500", "eXp")."""
    return name[:1].isupper() and not any(c.isdigit() for c in name)


def renamable(target: Target) -> bool:
    """Whether an annotated entity is a company whose name a copy may swap (see the module docstring)."""
    name = target.target
    if _BODY.search(name):
        return False
    if target.ticker or symbol_of_name(name):
        return True
    return _capitalised(name) and not _MARKET.search(name)


@lru_cache(maxsize=1)
def _pool() -> tuple[tuple[str, str], ...]:
    return tuple((n, s) for n, s in company_names() if _capitalised(n))


def rename(rec: Record, rng: random.Random) -> Record:
    """`rec` (a paragraph with `targets`) with its companies renamed to other listed companies, each target
    keeping its gold label under its new name and symbol; `rec` itself when nothing can be renamed."""
    names = {t.target: t for t in rec.targets}
    spans: list[tuple[int, int, str]] = []
    for name, t in names.items():
        if renamable(t):
            sym = t.ticker or symbol_of_name(name)
            spans += [(s, e, name) for s, e in target_spans(rec.text, name, sym)]
    spans.sort()
    if not spans or any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        return rec
    taken = rec.text.casefold()
    pool = [(n, s) for n, s in _pool() if n.casefold() not in taken]
    renamed = sorted({name for *_, name in spans})
    new = dict(zip(renamed, rng.sample(pool, len(renamed))))
    parts, at = [], 0
    for s, e, name in spans:
        parts += [rec.text[at:s], new[name][0]]
        at = e
        if ric := _RIC.match(rec.text, at):
            parts.append(f" <{new[name][1]}.N>")
            at = ric.end()
    parts.append(rec.text[at:])
    targets = [replace(t, target=new[t.target][0], ticker=new[t.target][1]) if t.target in new else t
               for t in rec.targets]
    return replace(rec, text="".join(parts), targets=targets, tickers=[])


def renamed_copies(paragraphs: Sequence[Record], copies: int, seed: int) -> list[Record]:
    """`copies` renamed copies (ids `<paragraph id>~r<i>`, each its own seeded renaming) of each paragraph."""
    rng = random.Random(seed)
    return [replace(rename(p, rng), id=f"{p.id}~r{i}") for p in paragraphs for i in range(1, copies + 1)]
