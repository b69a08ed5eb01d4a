"""Case table for the ticker extractor: cashtags, exchange prefixes, known bare symbols, stoplist, amounts,
URLs, crypto."""

from __future__ import annotations

import pytest

from tickerpulse.stream.tickers import asset_class, extract_mentions, extract_tickers, known_symbols, symbols_header

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
