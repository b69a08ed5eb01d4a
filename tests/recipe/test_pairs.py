"""Target pairs: two single-target rows joined, each asked about its own target with its own gold."""

from __future__ import annotations

from collections import Counter

from tickerpulse.data.records import Record
from tickerpulse.recipe.pairs import single_target, target_pairs


def _rows() -> list[Record]:
    texts = [("$AAPL beats estimates, raises guidance", "positive"), ("$INTC guides lower on weak PC demand", "negative"),
             ("$MSFT holds its dividend unchanged", "neutral"), ("Tesla is tanking after the recall", "negative"),
             ("$AMD wins a big data-center order", "positive"), ("Markets drift sideways before the Fed", "neutral"),
             ("$NVDA and $AMD both slide", "negative"), ("$KO sales flat in the quarter", "neutral")]
    return [Record(id=f"r{i}", text=t, label=lab, source="tfns", dataset="tfns") for i, (t, lab) in enumerate(texts)]


def test_single_target_rows_name_exactly_one_target() -> None:
    picked = {r.id: sym for r, sym in single_target(_rows())}
    # names count (the stream asks "Tesla" as TSLA); no target or two targets are left out
    assert picked == {"r0": "AAPL", "r1": "INTC", "r2": "MSFT", "r3": "TSLA", "r4": "AMD", "r7": "KO"}


def test_pairs_ask_each_target_with_its_own_gold() -> None:
    rows = _rows()
    by_id = {r.id: r for r in rows}
    pairs = target_pairs(rows, 40, seed=3, conflict_share=0.7)
    assert pairs and len(pairs) % 2 == 0
    kinds = Counter()
    for a, b in zip(pairs[::2], pairs[1::2]):
        assert a.text == b.text and a.source == b.source == "pairs"
        qa, qb = a.questions()[0], b.questions()[0]
        assert qa.target != qb.target and {qa.target, qb.target} <= {"AAPL", "INTC", "MSFT", "TSLA", "AMD", "KO"}
        for rec, q in ((a, qa), (b, qb)):
            src = by_id[rec.id.split(":")[1]]
            assert src.text in rec.text and q.label == rec.label == src.label  # the source row's gold, per target
        kinds[qa.label != qb.label] += 1
    assert kinds[True] > kinds[False] > 0  # mostly conflicting, some agreeing pairs
    assert target_pairs(rows, 40, seed=3, conflict_share=0.7) == pairs  # seeded


def test_pairs_need_two_single_target_rows() -> None:
    assert target_pairs(_rows()[:1], 5, seed=0) == [] and target_pairs(_rows(), 0, seed=0) == []


def test_paragraph_pairs_ask_every_entity_of_both_paragraphs_with_its_own_gold() -> None:
    from tickerpulse.data.records import Target
    from tickerpulse.recipe.pairs import paragraph_pairs

    def para(i: int, *ents: tuple[str, str]) -> Record:
        return Record(id=f"p{i}", text=f"Paragraph {i} about " + " and ".join(n for n, _ in ents) + ".",
                      label=ents[0][1], source="finentity", dataset="finentity",
                      targets=[Target(target=n, score={"negative": -0.7, "neutral": 0.0, "positive": 0.7}[lab],
                                      label=lab) for n, lab in ents])

    paras = [para(0, ("Tesla", "negative")), para(1, ("Ford", "positive"), ("GM", "positive")),
             para(2, ("Tesla", "positive")), para(3, ("Brent crude", "neutral"))]
    by_id = {p.id: p for p in paras}
    out = paragraph_pairs(paras, 6, seed=1)
    assert out
    for rec in out:
        q = rec.questions()[0]
        a, b = rec.id.split(":")[1].split("#")[0].split("+")
        assert not ({a, b} == {"p0", "p2"})  # Tesla in both: its question would have two golds
        src = next(by_id[i] for i in (a, b) if q.target in {t.target for t in by_id[i].targets})
        gold = next(t.label for t in src.targets if t.target == q.target)
        assert src.text in rec.text and q.label == gold and rec.source == "pairs"
    assert paragraph_pairs(paras, 6, seed=1) == out
