"""Case table for the ticker extractor: cashtags, exchange prefixes, known bare symbols, stoplist, amounts,
URLs, crypto; company names when asked (`names=True`)."""

from __future__ import annotations

import pytest

from tickerpulse.task.tickers import asset_class, extract_mentions, extract_tickers, known_symbols, symbols_header

CASES: list[tuple[str, list[str]]] = [
    # cashtags
    ("$AAPL to the moon", ["AAPL"]),
    ("$tsla deliveries beat", ["TSLA"]),
    ("Loading up on $BRK.B today", ["BRK.B"]),
    ("$BRK-B is the same as $brk.b", ["BRK.B"]),
    ("$CCL $RCL - Nomura points to bookings weakness", ["CCL", "RCL"]),
    ("$AAPL $MSFT $AAPL again", ["AAPL", "MSFT"]),
    ("$AAPL's earnings were great", ["AAPL"]),
    ("($NVDA) up 5%", ["NVDA"]),
    ("Buy $F, sell $GM.", ["F", "GM"]),
    ("$SPY puts printing", ["SPY"]),
    ("$QQQ/$SPY ratio", ["QQQ", "SPY"]),
    ("Shorting $GME!!!", ["GME"]),
    ("$X is US Steel", ["X"]),
    ("what about $ZZZZ?", ["ZZZZ"]),
    # amounts are not tickers
    ("$100 price target on $AMD", ["AMD"]),
    ("Revenue of $5.2B vs $4.9B expected", []),
    ("EPS of $0.45, up from $0.30", []),
    ("$1,000 invested in 2010", []),
    ("Raised $50M in a Series B", []),
    ("US$5 per share", []),
    ("$5.2B deal for $ATVI", ["ATVI"]),
    ("A 10% move to $250", []),
    # exchange-qualified
    ("Nvidia (NASDAQ: NVDA) rises after earnings", ["NVDA"]),
    ("Berkshire (NYSE:BRK.B) buys more", ["BRK.B"]),
    ("Tesla Inc (nasdaq: tsla) recalls cars", ["TSLA"]),
    ("(NYSE: KO) and (NYSE: PEP) report", ["KO", "PEP"]),
    ("OTCMKTS: SFTBY rallies", ["SFTBY"]),
    ("NYSE American: UAMY jumps", ["UAMY"]),
    # bare known symbols
    ("AAPL and MSFT lead the market", ["AAPL", "MSFT"]),
    ("Why NVDA is still cheap", ["NVDA"]),
    ("Long TSLA, short F", ["TSLA"]),
    ("BRK.B hits record", ["BRK.B"]),
    ("#TSLA trending", ["TSLA"]),
    ("Apple AAPL, Amazon AMZN and $GOOG", ["AAPL", "AMZN", "GOOG"]),
    # stoplist and unknown upper-case words
    ("I think the CEO should resign", []),
    ("DD on this one: YOLO", []),
    ("EPS beat, IPO next week", []),
    ("The FED and the SEC and the FDA", []),
    ("GDP and CPI data out today", []),
    ("ALL IN on this", []),
    ("IT spending is up, NOW what?", []),
    ("ON the other hand", []),
    ("AI stocks are hot", []),
    ("USA USA USA", []),
    ("AT&T and the U.S. economy", []),
    ("BUY NOW BEFORE IT IS TOO LATE", []),
    ("ETF inflows hit record in Q3", []),
    ("TODO: FIX THE BUG", []),
    # URLs and handles
    ("https://finance.example.com/quote/$AAPL", []),
    ("read https://t.co/AbC $TSLA", ["TSLA"]),
    ("see www.example.com/MSFT for more", []),
    ("mail me at ir@AAPL.com", []),
    ("$BYND - JPMorgan reels in expectations on Beyond Meat https://t.co/bd0xbFGjkT", ["BYND"]),
    # crypto
    ("$BTC breaking out", ["BTC"]),
    ("$BTC.X and $ETH.X on StockTwits", ["BTC", "ETH"]),
    ("ETH gas fees are high", ["ETH"]),
    ("Swapped $doge for $SOL", ["DOGE", "SOL"]),
    ("$COIN up as $BTC rallies", ["COIN", "BTC"]),
    # currencies and empties
    ("$USD strength hurts $EEM", ["EEM"]),
    ("", []),
    ("no tickers here at all", []),
    ("$ alone and $$ and $ 5", []),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_case_table(text: str, expected: list[str]) -> None:
    assert extract_tickers(text) == expected


# Company names (`names=True`, what the stream uses); the table above holds with names off (the default).
NAME_CASES: list[tuple[str, list[str]]] = [
    ("Tesla is tanking", ["TSLA"]),
    ("Apple and $MSFT both beat", ["AAPL", "MSFT"]),
    ("I ate an apple", []),
    ("Target Corp cuts its outlook", ["TGT"]),
    ("Analysts lift their price target on $NVDA", ["NVDA"]),
    ("Target hit, taking profits", []),
    ("Alphabet and Google are one company", ["GOOGL"]),
    ("Meta, formerly Facebook", ["META"]),
    ("sold tesla, bought nvidia", ["TSLA", "NVDA"]),
    ("Microsoft (NASDAQ: MSFT) and Amazon", ["MSFT", "AMZN"]),
    ("Nvidia (NASDAQ: NVDA) guides above consensus", ["NVDA"]),
    ("Bank of America downgrades Johnson & Johnson", ["BAC", "JNJ"]),
    ("GE HealthCare rises", ["GEHC"]),  # the bare GE inside the name is part of the name
    ("$META and Meta", ["META"]),
    ("Visa and Mastercard fees", ["V", "MA"]),
    ("my visa expired", []),
    ("Bitcoin breaks out, $ETH follows", ["BTC", "ETH"]),
    ("TESLA IS TANKING AND APPLE TOO", ["TSLA"]),  # all caps: only any-case names
    ("Tesla's deliveries beat", ["TSLA"]),
    ("https://example.com/Tesla-news", []),
    ("Block Inc and Block trades", ["XYZ"]),
]


@pytest.mark.parametrize("text,expected", NAME_CASES, ids=[f"n{i:02d}" for i in range(len(NAME_CASES))])
def test_name_case_table(text: str, expected: list[str]) -> None:
    assert extract_tickers(text, names=True) == expected


def test_names_are_off_by_default() -> None:
    assert extract_tickers("Tesla is tanking") == [] and extract_tickers("Apple and $MSFT both beat") == ["MSFT"]
    assert [m.kind for m in extract_mentions("Tesla is tanking", names=True)] == ["name"]


def test_case_table_is_large() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("sym,cls", [("BTC", "crypto"), ("ETH", "crypto"), ("DOGE", "crypto"), ("BTC.X", "crypto"),
                                     ("BTC-USD", "crypto"), ("COIN", "equity"), ("AAPL", "equity"), ("ZZZZ", "equity")])
def test_asset_class(sym: str, cls: str) -> None:
    assert asset_class(sym) == cls


def test_mentions_carry_kind_and_class() -> None:
    ms = extract_mentions("$btc.x pumps while (NASDAQ: COIN) and MSFT wait")
    assert [(m.symbol, m.asset_class, m.kind) for m in ms] == [
        ("BTC", "crypto", "cashtag"), ("COIN", "equity", "exchange"), ("MSFT", "equity", "bare")]


def test_symbol_list_is_dated_and_sourced() -> None:
    head = " ".join(symbols_header())
    assert "Built 20" in head and "pytickersymbols" in head
    known = known_symbols()
    assert len(known) > 1000 and known["AAPL"] == "equity" and known["BTC"] == "crypto"


# Shapes that made extraction quadratic (issue #26: 3.0 s for one 40,000-character post, 4x per doubling):
# dotted runs (the e-mail pattern retried every position), many mentions (each bare word was checked
# against every cashtag span), plus other long runs a regex could trip on.
ADVERSARIAL = {
    "dots": lambda n: ("a." * n)[:n],
    "mentions": lambda n: ("$AAPL and MSFT up " * n)[:n],
    "cashtags": lambda n: ("$A " * n)[:n],
    "exchange": lambda n: ("NYSE:AA NVDA " * n)[:n],
    "word_run": lambda n: "a" * n,
    "at_signs": lambda n: ("a@b" * n)[:n],
    "url_ish": lambda n: ("www.x$AAPL " * n)[:n],
    "spaces_after_exchange": lambda n: "NASDAQ" + " " * (n - 6),
    "names": lambda n: ("Tesla and Apple Inc. beat Bank of America " * n)[:n],
    "name_prefixes": lambda n: ("Bank of " * n)[:n],
    "possessives": lambda n: ("a's Tesla's " * n)[:n],
    "words": lambda n: ("a " * n)[:n],
}


def _cpu_times(texts: list[str], repeats: int = 5, names: bool = False) -> list[float]:
    """Best CPU time (not wall time: other jobs on the machine barely move it) of `extract_tickers` on each
    text, measured interleaved so a load change hits all of them alike."""
    import time

    best = [float("inf")] * len(texts)
    for _ in range(repeats):
        for i, text in enumerate(texts):
            t0 = time.process_time()
            extract_tickers(text, names=names)
            best[i] = min(best[i], time.process_time() - t0)
    return best


@pytest.mark.parametrize("names", [False, True], ids=["symbols", "names"])
@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_extraction_is_linear_on_the_largest_post(shape: str, names: bool) -> None:
    """Generous bounds: the largest post the stream accepts (40k characters) in < 0.25 s of CPU (it took
    3-7 s; ~10-40 ms now), and two doublings of the length (40k -> 160k) cost < 8x the time (linear: ~4x;
    the old quadratic code: 16x). Compared from 40k up, where fixed costs no longer dominate."""
    from tickerpulse.stream.schema import MAX_TEXT_CHARS

    make = ADVERSARIAL[shape]
    extract_tickers(make(1000), names=names)  # warm the symbol and name tables and regex caches
    base, quad = _cpu_times([make(MAX_TEXT_CHARS), make(4 * MAX_TEXT_CHARS)], names=names)
    assert base < 0.25, f"{shape}: {base * 1000:.0f} ms for {MAX_TEXT_CHARS} characters"
    assert quad < 8 * max(base, 0.005), f"{shape}: {base * 1000:.1f} ms -> {quad * 1000:.1f} ms for 4x the length"
