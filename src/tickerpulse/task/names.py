"""Company and coin names in free text -> symbols ("Tesla is tanking" -> TSLA), in linear time.

The table: `data/names.txt` (built by `scripts/build_symbols.py` from the same public listing as
`symbols.txt`: official names without "The" and legal words, "Apple Inc." -> "Apple") overlaid by
`data/aliases.txt` (curated by hand: short forms such as "Google", "Facebook", "Exxon", pins for names the
listing gives to two symbols, and flags). A name is a sequence of tokens (`_TOKEN`: words, with `-`, `.`,
`&` inside a word kept, so "Coca-Cola", "Amazon.com", "AT&T" are one token and "Meta-analysis" is not
"Meta"); tokens are compared ignoring case, dash variants folded.

When a name counts (the case rule; the names of companies are often everyday words):
- written capitalised: each word that starts upper case in the table starts upper case in the post
  ("Apple", "APPLE", not "apple": "I ate an apple" names nobody), in a post that is not mostly capitals
  (where capitals carry no evidence);
- names flagged `any-case` (distinctive brands: Tesla, Nvidia, Google, Bitcoin) count in any case and in
  all-caps posts ("tesla is tanking");
- names flagged `everyday` (Target, Block, Match, Progressive, 3M, ...) count only when a legal word
  follows ("Target Corp" -> TGT; "price target", "Target hit" -> nothing);
- an all-caps name of at most 5 characters from the build (an acronym such as TKO, MYR, FICO) is left to
  the bare-symbol rule of `tickers.py` and its stoplist, unless aliases.txt lists it (HP, AT&T);
- a name with symbol `-` in aliases.txt is a blocker: it matches (any case) and names nobody, so a shorter
  name inside it does not count ("Cronos Group" is no coin, "National Bank" no company).
Longest match wins (`Bank of America` over a shorter name at the same place), matches do not overlap, a
legal word right after a name (`Tesla, Inc.`) belongs to the match.

`symbol_of_name` resolves a name given on its own (a request's target, a dataset's entity) without the
case rule.

Cost: one tokenising regex pass plus a walk of at most `MAX_TOKENS` tokens of a token trie per token:
O(length of the text). Known limitations: a capitalised everyday word at the start of a sentence that is
no company ("Apple pie recipes") still counts; names of companies outside the listing and aliases
(private companies, most non-US firms) are not found; a name never decides between share classes (it
names the pinned one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# A word: letters/digits, with `-` `.` `&` `'` joining parts of one word ("Coca-Cola", "Amazon.com", "AT&T",
# "McDonald's"); a lone `&` ("Johnson & Johnson"). Possessive quantifiers: no backtracking, one pass.
_TOKEN = re.compile(r"[^\W_]++(?:[-\u2010\u2011\u2013.&'\u2019][^\W_]++)*+|&")
_FOLD = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2019": "'"})
# Legal words that may follow a name and make an everyday word a company ("Target Corp").
LEGAL_WORDS = frozenset({"inc", "incorporated", "corp", "corporation", "co", "company", "companies", "ltd",
                         "limited", "plc", "llc", "holdings", "holding", "group", "n.v", "s.a"})
BLOCKED = "-"  # the symbol of a blocker entry (see the module docstring)
MAX_TOKENS = 8  # no name in the table has more tokens (checked by the loader)
_END = ""  # trie key of the entry that ends at a node (no token is empty)


@dataclass(frozen=True)
class Name:
    """One table entry: the name as written in the table, its symbol, and how it may be written."""

    text: str
    symbol: str
    any_case: bool = False
    everyday: bool = False
    caps: tuple[bool, ...] = ()  # per token: must start upper case in the post


def _key(token: str) -> str:
    return token.casefold().translate(_FOLD)


def _tokens(name: str) -> list[str]:
    return [m.group() for m in _TOKEN.finditer(name)]


def _read(file: str) -> list[list[str]]:
    text = resources.files("tickerpulse.task").joinpath("data", file).read_text("utf-8")
    return [ln.split("\t") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _acronym(name: str) -> bool:
    return " " not in name and len(name) <= 5 and name.upper() == name


@lru_cache(maxsize=1)
def name_table() -> dict[tuple[str, ...], Name]:
    """token keys -> Name: names.txt without acronyms, overlaid by aliases.txt (blockers have symbol `-`)."""
    table: dict[tuple[str, ...], Name] = {}
    for name, symbol, *_ in _read("names.txt"):
        if not _acronym(name):
            table[tuple(map(_key, _tokens(name)))] = Name(name, symbol)
    for name, symbol, *rest in _read("aliases.txt"):
        key = tuple(map(_key, _tokens(name)))
        flags = set(rest[0].split(",")) if rest and rest[0] else set()
        if unknown := flags - {"any-case", "everyday"}:
            raise ValueError(f"aliases.txt: {name}: unknown flag(s) {sorted(unknown)}")
        table[key] = Name(name, symbol, "any-case" in flags or symbol == BLOCKED, "everyday" in flags)
    out = {}
    for key, n in table.items():
        if not key or len(key) > MAX_TOKENS:
            raise ValueError(f"name {n.text!r}: {len(key)} tokens (1..{MAX_TOKENS})")
        out[key] = Name(n.text, n.symbol, n.any_case, n.everyday, tuple(t[0].isupper() for t in _tokens(n.text)))
    return out


def company_names() -> list[tuple[str, str]]:
    """(name, symbol) of every listed company in names.txt (coins left out) that aliases.txt does not flag as
    an everyday word or block: names a text may use for a company."""
    table = name_table()
    out = []
    for name, symbol, source, *_ in _read("names.txt"):
        entry = table.get(tuple(map(_key, _tokens(name))))
        if source.startswith("index:") and not (entry and (entry.everyday or entry.symbol == BLOCKED)):
            out.append((name, symbol))
    return out


@lru_cache(maxsize=1)
def _trie() -> dict:
    root: dict = {}
    for key, entry in name_table().items():
        node = root
        for tok in key:
            node = node.setdefault(tok, {})
        node[_END] = entry
    return root


@dataclass(frozen=True)
class NameMatch:
    """A name found in a text: where (`start`, `end`, end includes a trailing legal word) and which."""

    start: int
    end: int
    name: Name


def find_names(text: str, *, capitals_are_evidence: bool = True, skip: bytes | bytearray | None = None,
               ) -> list[NameMatch]:
    """Every company or coin name in `text`, leftmost-longest, non-overlapping, in order.

    Args:
        text: any string (URLs should be blanked by the caller: a name inside a link is no mention).
        capitals_are_evidence: False for a post written mostly in capitals: then only `any-case` names count.
        skip: a mask over `text`; a name starting at a set position is ignored (inside a cashtag `$META`).
    """
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    root = _trie()
    n = len(toks)
    out: list[NameMatch] = []
    i = 0
    while i < n:
        node = _child(root, toks[i][2])
        if node is None or (skip is not None and skip[toks[i][0]]):
            i += 1
            continue
        best: tuple[int, int, Name] | None = None  # (index after the match, end offset, entry)
        j = i
        while True:
            entry = node.get(_END)
            if entry is not None and (hit := _accept(entry, text, toks, i, j, capitals_are_evidence)):
                best = (*hit, entry)
            j += 1
            if j >= n or j - i >= MAX_TOKENS or not _joined(text, toks[j - 1][1], toks[j][0]):
                break
            node = _child(node, toks[j][2])
            if node is None:
                break
        if best is None:
            i += 1
            continue
        if best[2].symbol != BLOCKED:
            out.append(NameMatch(toks[i][0], best[1], best[2]))
        i = best[0]
    return out


def symbol_of_name(name: str) -> str | None:
    """The symbol of an entity named on its own (a client's `target`, an annotated entity such as
    FinEntity's "Johnson & Johnson"), else None. The whole string must be a table name, optionally with a
    leading "The" and trailing legal words ("The Walt Disney Company", "Tesla, Inc."); case and the
    everyday rule do not apply (whoever named the target meant an entity: "Target" -> TGT)."""
    toks = _tokens(name)
    if toks and _key(toks[0]) == "the":
        toks = toks[1:]
    while toks and _key(toks[-1]) in LEGAL_WORDS and len(toks) > 1:
        toks = toks[:-1]
    if not toks or len(toks) > MAX_TOKENS:
        return None
    node: dict | None = _trie()
    for tok in toks:
        node = _child(node, tok) if node is not None else None
    entry = node.get(_END) if node is not None else None
    return entry.symbol if entry is not None and entry.symbol != BLOCKED else None


def _child(node: dict, token: str) -> dict | None:
    """The trie node after `token`; a possessive falls back to its stem ("Tesla's" -> "Tesla"), while a
    name that has the 's itself ("McDonald's", "Carter's") matches as written, never as "Carter"."""
    k = _key(token)
    hit = node.get(k)
    if hit is None and k.endswith("'s"):
        hit = node.get(k[:-2])
    return hit


def _joined(text: str, end: int, start: int) -> bool:
    """Two tokens are parts of one name when only spaces separate them (not a comma, a full stop, ...)."""
    return start - end <= 3 and text[end:start].isspace()


def _accept(entry: Name, text: str, toks: list[tuple[int, int, str]], i: int, j: int,
            capitals: bool) -> tuple[int, int] | None:
    """(index after the match, end offset) when tokens i..j spell `entry` in an accepted way, else None."""
    if not entry.any_case:
        if not capitals or not all(t[2][0].isupper() for t, up in zip(toks[i : j + 1], entry.caps) if up):
            return None
    nxt = j + 1
    if nxt < len(toks) and _key(toks[nxt][2]) in LEGAL_WORDS:
        gap = text[toks[j][1] : toks[nxt][0]]
        if len(gap) <= 3 and gap.strip() in ("", ","):
            return nxt + 1, toks[nxt][1]
    if entry.everyday:
        return None
    return j + 1, toks[j][1]
