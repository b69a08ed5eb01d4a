"""Renamed copies: the same paragraph about other listed companies, each entity keeping its gold."""

from __future__ import annotations

import random

from tickerpulse.data.finentity import target_records
from tickerpulse.data.records import Record, Target
from tickerpulse.recipe.renames import renamable, rename, renamed_copies
from tickerpulse.task.marking import target_spans
from tickerpulse.task.names import company_names, symbol_of_name

TEXT = ("Micro-blogging site Twitter Inc <TWTR.N> gained 3.8% after saying it will name Tesla Inc <TSLA.O> CEO Elon "
        "Musk to its board, according to Refinitiv data; the S&P 500 was flat. Twitter Inc shares led the Nasdaq.")


def _paragraph() -> Record:
    targets = [Target(target="Twitter Inc", score=None, ticker="TWTR", label="positive"),
               Target(target="Tesla Inc", score=None, ticker="TSLA", label="neutral"),
               Target(target="Refinitiv", score=None, ticker=None, label="neutral"),
               Target(target="S&P 500", score=None, ticker=None, label="neutral")]
    return Record(id="p1", text=TEXT, label="positive", source="finentity", targets=targets, dataset="finentity")


def test_companies_are_renamed_everywhere_and_keep_their_gold() -> None:
    rec = _paragraph()
    out = rename(rec, random.Random(0))
    assert [t.label for t in out.targets] == [t.label for t in rec.targets]
    old_names = ("Twitter", "Tesla", "Refinitiv", "TWTR", "TSLA")
    assert not any(n in out.text for n in old_names)  # every mention and Reuters code renamed
    assert "S&P 500" in out.text and out.targets[3].target == "S&P 500"  # an index keeps its name
    for t in out.targets[:3]:
        assert t.target not in {"Twitter Inc", "Tesla Inc", "Refinitiv"}
        assert target_spans(out.text, t.target, None)  # the new name is where the old one was
        assert t.ticker and symbol_of_name(t.target) == t.ticker
    assert out.text.count(out.targets[0].target) == 2 and f"<{out.targets[0].ticker}.N>" in out.text
    assert len({t.target for t in out.targets}) == 4
    # the words that carry the sentiment are untouched
    for words in ("gained 3.8%", "according to", "data; the S&P 500 was flat.", "shares led the"):
        assert words in out.text


def test_copies_are_seeded_distinct_and_asked_per_entity() -> None:
    rec = _paragraph()
    copies = renamed_copies([rec], 3, seed=5)
    assert [c.id for c in copies] == ["p1~r1", "p1~r2", "p1~r3"]
    assert len({c.text for c in copies}) == 3 and rec.text not in {c.text for c in copies}
    assert renamed_copies([rec], 3, seed=5) == copies
    questions, ambiguous = target_records(copies)
    assert ambiguous == 0 and len(questions) == 12
    assert {q.id.rpartition("#")[0] for q in questions} == {"p1~r1", "p1~r2", "p1~r3"}


def test_markets_and_overlapping_names_are_left_as_written() -> None:
    assert not renamable(Target(target="Nasdaq Composite", score=None, ticker=None, label="neutral"))
    assert not renamable(Target(target="materials", score=None, ticker=None, label="negative"))
    assert not renamable(Target(target="Brent", score=None, ticker=None, label="negative"))
    assert not renamable(Target(target="Kospi", score=None, ticker=None, label="negative"))
    assert renamable(Target(target="Wedbush", score=None, ticker=None, label="neutral"))
    overlap = Record(id="p2", text="Wedbush Securities analyst said Wedbush sees upside.", label="neutral",
                     source="finentity", dataset="finentity",
                     targets=[Target(target="Wedbush", score=None, ticker=None, label="neutral"),
                              Target(target="Wedbush Securities", score=None, ticker=None, label="positive")])
    assert rename(overlap, random.Random(0)) is overlap
    sectors = Record(id="p3", text="Staples <.SPLRCS> gained while energy slid.", label="positive",
                     source="finentity", dataset="finentity",
                     targets=[Target(target="energy", score=None, ticker=None, label="negative")])
    assert rename(sectors, random.Random(0)) is sectors


def test_public_bodies_keep_their_names_even_when_the_name_table_knows_them() -> None:
    bodies = ["Nasdaq", "NYSE", "ECB", "European Central Bank", "FAA", "China Passenger Car Association",
              "Federal Reserve", "SEC", "U.S. Food and Drug Administration", "Ministry of Finance", "Bank of Japan",
              "Norges", "CGT union", "American Petroleum Institute", "White House"]
    for name in bodies:
        assert not renamable(Target(target=name, score=None, ticker=None, label="neutral")), name
    assert symbol_of_name("Nasdaq") is not None  # the table maps it to NDAQ: the body rule comes first
    for name in ["Union Pacific", "FedEx", "Devon Energy", "Bank of America", "Walgreens Boots Alliance", "Refinitiv"]:
        assert renamable(Target(target=name, score=None, ticker=None, label="neutral")), name


def test_company_names_are_listed_companies_only() -> None:
    names = dict(company_names())
    assert names["Apple"] == "AAPL" and "Bitcoin" not in names and "Target" not in names
