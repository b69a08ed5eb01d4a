"""Ticker extraction from free text (social posts, headlines).

What counts as a ticker, in order of trust:
1. Cashtags: `$AAPL`, `$BRK.B`, `$BRK-B`, lower case `$tsla`, StockTwits crypto `$BTC.X`. Letters only:
   `$100`, `$5.2B`, `$0.45` are amounts. A cashtag needs no symbol list.
2. Exchange-qualified symbols: `(NASDAQ: NVDA)`, `NYSE:BRK.B`, `nasdaq:tsla` (any listed exchange prefix).
3. Bare upper-case words (`AAPL up 3%`), only when the word is a known symbol (`data/symbols.txt`, built
   by `scripts/build_symbols.py` from public listings, with its date) and not in the stoplist (words like
   I, CEO, DD, YOLO, EPS, IPO and every-day words that happen to be symbols: ALL, NOW, ON, IT ...). Bare
   single letters never count, and an all-caps post ("BUY NOW BEFORE IT IS TOO LATE") is not searched
   for bare symbols at all.
4. Company and coin names, only when asked (`names=True`; the stream asks, training data does not):
   "Tesla is tanking" -> TSLA, "Target Corp" -> TGT but not "price target" (the case rule and the name
   table are in `names.py`). A bare upper-case word inside a name ("GE HealthCare") is part of the name.
URLs (and e-mail addresses) are removed first: a `$` or symbol inside a link is not a mention.

Crypto: symbols in the crypto part of the list (BTC, ETH, SOL, DOGE, ...) get asset class `crypto`; a
crypto symbol that is also a stock symbol (ETH = Ethan Allen) is read as the coin, which is what posts
almost always mean. Known limitation: a cashtag of a made-up symbol is still a ticker (the author marked it
as one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

from tickerpulse.task.names import find_names

AssetClass = Literal["equity", "crypto"]

# The e-mail branch starts only where a run of local-part characters starts (the lookbehind) and never
# backtracks inside it (possessive `++`): `\b[\w.+-]+@` tried every position of an `a.a.a...` run again,
# which made a 40,000-character post take seconds (quadratic). Now every character is looked at O(1) times.
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S++|(?<![\w.+-])[\w.+-]++@[\w-]++\.[\w.-]+\b", re.I)
# A `$` not preceded by a word char or another `$`/digit; letters (1-6) with an optional class suffix.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,2})?)(?![\w$%])(?!\.\d)")
_EXCHANGE = re.compile(
    r"\b(?:NASDAQ|NYSE|NYSEAMERICAN|NYSE\s?American|NYSEARCA|NYSE\s?Arca|AMEX|OTC|OTCQX|OTCQB|OTCMKTS|"
    r"BATS|CBOE|TSX|TSXV|LSE|ASX)\s*:\s*([A-Za-z]{1,5}(?:[.\-][A-Za-z]{1,2})?)\b(?![.\-]?\d)",
    re.I,
)
_BARE = re.compile(r"(?<![\w$.\-/@])([A-Z]{2,5}(?:\.[A-Z])?)(?![\w\-]|\.[A-Za-z]{2})")

# Words that are symbols or look like them but, written bare, almost never mean a ticker.
STOPLIST = frozenset("""
I A AM PM AN AS AT BE BY DO GO HE IF IN IS IT ME MY NO OF OH OK ON OR SO TO UP US WE
ALL AND ANY ARE BIG BOX CAN CAR DAY DID EAT FOR FUN GOT HAS HER HIM HIS HOW ITS JOB LOW MAN MAY NEW NOT NOW
OLD ONE OUR OUT OWN PAY PUT RUN SAY SEE SHE THE TOO TOP TWO WAS WAY WHO WHY WIN YES YET YOU AGO LEG TAP
BEST CASH COST EVER FAST FLOW GOOD HIGH HOLD HOME JUST KEEP LIFE LIKE LONG LOVE MORE MOST NEXT NICE OPEN
PEAK PLAY PLUS REAL ROCK SAFE SELL TEAM TECH THAT THIS TRUE WELL WHAT WHEN WORK YOUR BALL CAKE GOLD HOPE
CEO CFO COO CTO CIO DD EPS IPO YOLO FOMO FUD ATH ATL ROI YTD QOQ YOY EOD EOW EOM AH PT TA FA IV OTM ITM
ETF ETFS GDP CPI PPI PCE FED FOMC SEC FDA DOJ FTC IRS EU UK USA UAE UN NATO IMF ECB BOE BOJ OPEC
USD EUR GBP JPY CNY CAD AUD CHF HKD INR BUY CALL PUTS BULL BEAR MOON HODL LOL IMO IMHO TLDR FYI AMA
NYSE NASDAQ AMEX OTC DOW SPX NDX RUT VIX Q1 Q2 Q3 Q4 H1 H2 FY AI ML AR VR EV EVS API APP CEOS
NEWS INC LLC LTD PLC CORP CO AG SA NV SE REIT RE ES DE EL LA LE DA SUB OP WEN BTW ICYMI DM RT
""".split())

# Cashtags that are currency amounts or market indices rather than instruments.
CASHTAG_STOP = frozenset({"USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "CNY", "HKD"})


@dataclass(frozen=True)
class Mention:
    """One ticker mention: symbol (upper case, no `$`), asset class, how it was found, where (`end`: after
    the mentioning text, e.g. the whole name "Tesla, Inc.")."""

    symbol: str
    asset_class: AssetClass
    kind: Literal["cashtag", "exchange", "name", "bare"]
    start: int
    end: int


@lru_cache(maxsize=1)
def known_symbols() -> dict[str, AssetClass]:
    """symbol -> asset class, from the shipped list (`data/symbols.txt`, header says source and date)."""
    text = resources.files("tickerpulse.task").joinpath("data", "symbols.txt").read_text("utf-8")
    out: dict[str, AssetClass] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sym, cls, *_ = line.split("\t")
            out[sym] = "crypto" if cls == "crypto" else "equity"
    return out


def symbols_header() -> list[str]:
    """The comment lines of the symbol list (source and build date)."""
    text = resources.files("tickerpulse.task").joinpath("data", "symbols.txt").read_text("utf-8")
    return [ln[2:] for ln in text.splitlines() if ln.startswith("#")]


@lru_cache(maxsize=8192)  # a long post repeats its symbols; the cache keeps extraction cheap per mention
def asset_class(symbol: str) -> AssetClass:
    """`crypto` for known crypto symbols (also in `BTC.X` / `BTC-USD` form), else `equity`."""
    base = re.split(r"[.\-]", symbol.upper().lstrip("$"), maxsplit=1)[0]
    return "crypto" if known_symbols().get(base) == "crypto" else "equity"


@lru_cache(maxsize=8192)
def _normalize(raw: str) -> str:
    """`brk-b` -> `BRK.B`; StockTwits crypto `BTC.X` -> `BTC`."""
    sym = raw.upper().replace("-", ".")
    base, _, suffix = sym.partition(".")
    if suffix == "X" and known_symbols().get(base) == "crypto":
        return base
    return sym


def _mostly_upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7


def find_mentions(text: str, *, names: bool = False) -> list[Mention]:
    """Every ticker mention in `text`, in order of position (duplicates kept); company names too when
    `names` (the module docstring's rule 4)."""
    if not text:
        return []
    # Blank out URLs with spaces of equal length so positions stay valid.
    clean = _URL.sub(lambda m: " " * len(m.group(0)), text)
    known = known_symbols()
    found: list[Mention] = []
    # Characters inside a cashtag or exchange match, so a bare word there is not counted twice. A mask,
    # not a list of spans: checking every bare word against every span was quadratic on long posts.
    taken = bytearray(len(clean))
    for m in _CASHTAG.finditer(clean):
        sym = _normalize(m.group(1))
        if sym in CASHTAG_STOP:
            continue
        found.append(Mention(sym, asset_class(sym), "cashtag", m.start(), m.end()))
        taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    for m in _EXCHANGE.finditer(clean):
        sym = _normalize(m.group(1))
        found.append(Mention(sym, asset_class(sym), "exchange", m.start(1), m.end(1)))
        taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    shouting = _mostly_upper(clean)
    if names:
        for nm in find_names(clean, capitals_are_evidence=not shouting, skip=taken):
            found.append(Mention(nm.name.symbol, asset_class(nm.name.symbol), "name", nm.start, nm.end))
            taken[nm.start : nm.end] = b"\x01" * (nm.end - nm.start)
    if not shouting:
        for m in _BARE.finditer(clean):
            sym = m.group(1)
            if sym in STOPLIST or sym not in known or taken[m.start()]:
                continue
            found.append(Mention(sym, known[sym], "bare", m.start(), m.end()))
    return sorted(found, key=lambda x: x.start)


def extract_mentions(text: str, *, names: bool = False) -> list[Mention]:
    """Unique mentions (first occurrence of each symbol), in order of appearance; `names`: company names too."""
    out: dict[str, Mention] = {}
    for m in find_mentions(text, names=names):
        out.setdefault(m.symbol, m)
    return list(out.values())


def extract_tickers(text: str, *, names: bool = False) -> list[str]:
    """Upper-case symbols without `$`, in order of first appearance, no duplicates; `names`: company names
    count too ("Tesla" -> TSLA)."""
    return [m.symbol for m in extract_mentions(text, names=names)]
