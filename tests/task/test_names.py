"""The name table and name matching (`tickerpulse.task.names`): the shipped data, the case rule, longest
match, and properties on arbitrary text (never crashes, only table symbols, linear time)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickerpulse.task.names import MAX_TOKENS, _read, find_names, name_table, symbol_of_name
from tickerpulse.task.tickers import extract_tickers, find_mentions, known_symbols


def names_in(text: str, **kw) -> list[tuple[str, str]]:
    return [(text[m.start : m.end], m.name.symbol) for m in find_names(text, **kw)]


def test_table_is_built_from_the_listing_and_the_curated_aliases() -> None:
    table = name_table()
    assert len(table) > 1000
    by_text = {n.text: n for n in table.values()}
    assert by_text["Apple"].symbol == "AAPL" and not by_text["Apple"].any_case  # derived from "Apple Inc."
    assert by_text["Coca-Cola"].symbol == "KO"  # "The Coca-Cola Company"
    assert by_text["Tesla"].any_case and by_text["Target"].everyday
    assert by_text["Alphabet"].symbol == by_text["Google"].symbol == "GOOGL"  # pinned: GOOG/GOOGL share the name
    assert by_text["Facebook"].symbol == by_text["Meta"].symbol == "META"
    assert by_text["Bancorp"].symbol == by_text["National Bank"].symbol == "-"  # blockers: generic words
    assert "TKO" not in by_text and "3M" in by_text  # acronyms are left to the bare-symbol rule, unless curated


def test_every_name_points_at_a_known_symbol_and_the_files_say_their_source() -> None:
    known = known_symbols()
    assert {n.symbol for n in name_table().values()} - {"-"} <= set(known)
    for file, needle in (("names.txt", "scripts/build_symbols.py"), ("aliases.txt", "Source:")):
        from importlib import resources

        head = resources.files("tickerpulse.task").joinpath("data", file).read_text("utf-8").splitlines()[:6]
        assert any(needle in line for line in head), file
    flags = {f for _, sym, *rest in _read("aliases.txt") for f in (rest[0].split(",") if rest and rest[0] else [])}
    assert flags <= {"any-case", "everyday"}
    assert max(len(k) for k in name_table()) <= MAX_TOKENS


@pytest.mark.parametrize("text,expected", [
    ("Tesla is tanking", [("Tesla", "TSLA")]),
    ("tesla is tanking", [("tesla", "TSLA")]),  # any-case: a distinctive brand
    ("I ate an apple", []),  # capitalisation required
    ("Apple pie", [("Apple", "AAPL")]),  # known limitation: a capitalised word counts
    ("Target Corp beats", [("Target Corp", "TGT")]),  # everyday: only with a legal word
    ("Target hit, price target raised", []),
    ("Bank of America and Bank of Hawaii", [("Bank of America", "BAC"), ("Bank of Hawaii", "BOH")]),
    ("Johnson & Johnson vs Johnson Controls", [("Johnson & Johnson", "JNJ"), ("Johnson Controls", "JCI")]),
    ("Tesla, Inc. recalls", [("Tesla, Inc", "TSLA")]),  # the legal word belongs to the match
    ("Meta-analysis of Meta", [("Meta", "META")]),  # a hyphenated word is one token
    ("Bank of\namerica", []),  # "america" not capitalised
    ("Bank, of America", []),  # a comma breaks a name
    ("Tesla's deliveries and McDonald's fries", [("Tesla's", "TSLA"), ("McDonald's", "MCD")]),
    ("Carter beats", []),  # "Carter's" is the name, not "Carter"
    ("Coca\u2013Cola", [("Coca\u2013Cola", "KO")]),  # dash variants fold
    ("Cronos Group rallies; Cronos too", [("Cronos", "CRO")]),  # a blocker hides the coin inside it
    ("National Bank of Canada", []),
])
def test_find_names(text: str, expected: list[tuple[str, str]]) -> None:
    assert names_in(text) == expected


def test_capitals_carry_no_evidence_in_a_shouting_post() -> None:
    assert names_in("APPLE AND TESLA", capitals_are_evidence=False) == [("TESLA", "TSLA")]
    assert names_in("APPLE AND TESLA") == [("APPLE", "AAPL"), ("TESLA", "TSLA")]


def test_skip_mask_hides_names_inside_other_mentions() -> None:
    text = "$META up"
    mask = bytearray(len(text))
    mask[0:5] = b"\x01" * 5
    assert names_in(text, skip=mask) == [] and names_in(text) == [("META", "META")]


@pytest.mark.parametrize("name,symbol", [
    ("Johnson & Johnson", "JNJ"), ("The Walt Disney Company", "DIS"), ("Tesla, Inc.", "TSLA"), ("apple", "AAPL"),
    ("Target", "TGT"), ("Alphabet Inc", "GOOGL"), ("Bancorp", None), ("Brent crude", None), ("", None),
    ("Inc", None), ("Apple Pay", None), ("Goldman Sachs Group Inc.", "GS"),
])
def test_symbol_of_a_named_target(name: str, symbol: str | None) -> None:
    assert symbol_of_name(name) == symbol


# Text made of name parts, joiners and noise: where a name matcher could go wrong or slow down.
PIECES = ["Bank", "of", "America", "Johnson", "&", "Tesla", "tesla", "Target", "Corp", "Inc", ".", ",", "'s", "\u2019s",
          "-", "Coca", "Cola", "$", "META", "Apple", "a", " ", "  ", "\n", "\u2013", "Alpha", "and", "Omega", "x" * 30]
name_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=60).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), name_text))
def test_never_crashes_and_finds_only_table_symbols(text: str) -> None:
    symbols = {n.symbol for n in name_table().values()} - {"-"}
    matches = find_names(text)
    assert all(m.name.symbol in symbols for m in matches)
    assert all(0 <= a.start < a.end <= b.start for a, b in zip(matches, matches[1:]))  # ordered, no overlap
    assert all(m.end <= len(text) for m in matches)
    marked = lambda ms: [(m.symbol, m.start) for m in ms if m.kind in ("cashtag", "exchange")]  # noqa: E731
    assert marked(find_mentions(text, names=True)) == marked(find_mentions(text))  # names never hide a cashtag


def _cpu(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        extract_tickers(text, names=True)
        best = min(best, time.process_time() - t0)
    return best


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map(" ".join))
def test_extraction_with_names_is_linear_on_any_repeated_unit(unit: str) -> None:
    """Any unit of name parts repeated to the stream's largest post (40k characters) is extracted in < 0.25 s
    of CPU, and 4x the length costs < 8x the time (linear: ~4x)."""
    from tickerpulse.stream.schema import MAX_TEXT_CHARS

    extract_tickers(unit, names=True)  # warm the tables
    text = (unit + " ") * (MAX_TEXT_CHARS // (len(unit) + 1) + 1)
    base, quad = _cpu(text[:MAX_TEXT_CHARS]), _cpu(text * 4)
    assert base < 0.25, f"{unit!r}: {base * 1000:.0f} ms"
    assert quad < 8 * max(base, 0.005), f"{unit!r}: {base * 1000:.1f} ms -> {quad * 1000:.1f} ms"


def _build_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "build_symbols.py"
    spec = importlib.util.spec_from_file_location("build_symbols", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("official,short", [
    ("Apple Inc.", "Apple"), ("The Coca-Cola Company", "Coca-Cola"), ("Enact Holdings, Inc.", "Enact"),
    ("Carnival Corporation & plc", "Carnival"), ("Eli Lilly and Company", "Eli Lilly"),
    ("JPMorgan Chase & Co.", "JPMorgan Chase"), ("Buckle (clothing retailer)", "Buckle"), ("Tesla, Inc.", "Tesla"),
    ("Bank of America", "Bank of America"), ("The Hartford", "Hartford"), ("Inc.", "Inc."),
])
def test_build_derives_the_name_posts_use(official: str, short: str) -> None:
    assert _build_script().short_name(official) == short


def test_build_leaves_out_names_of_several_listed_symbols() -> None:
    rows = {"GOOG": ("equity", "index:Alphabet Inc."), "GOOGL": ("equity", "index:Alphabet Inc."),
            "XOM": ("equity", "index:ExxonMobil"), "XON": ("equity", "index:ExxonMobil"),  # XON: an old symbol
            "BTC": ("crypto", "crypto:Bitcoin"), "ZZZ": ("equity", "cashtag x4")}
    names, clashes = _build_script().name_rows(rows, listed={"GOOG", "GOOGL", "XOM"})
    assert names == [("Bitcoin", "BTC", "crypto:Bitcoin"), ("ExxonMobil", "XOM", "index:ExxonMobil")]
    assert clashes == {"Alphabet": ["GOOG", "GOOGL"]}
