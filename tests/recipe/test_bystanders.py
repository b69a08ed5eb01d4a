"""Bystander questions: the row's target keeps its gold, the bystander named beside it is neutral."""

from __future__ import annotations

from collections import Counter

from tickerpulse.data.records import Record
from tickerpulse.recipe.bystanders import BYSTANDERS, TEMPLATES, bystander_records
from tickerpulse.task.contract import resolve_target
from tickerpulse.task.marking import target_spans


def _rows() -> list[Record]:
    texts = [("$AAPL beats estimates, raises guidance", "positive"), ("$INTC guides lower on weak PC demand", "negative"),
             ("$MSFT holds its dividend unchanged", "neutral"), ("Tesla is tanking after the recall", "negative"),
             ("$GS slides after a trading miss", "negative"), ("Markets drift sideways before the Fed", "neutral"),
             ("$NVDA and $AMD both slide", "negative"), ("Jefferies lifts $KO to buy", "positive")]
    return [Record(id=f"r{i}", text=t, label=lab, source="tfns", dataset="tfns") for i, (t, lab) in enumerate(texts)]


def test_each_text_asks_the_target_with_its_gold_and_the_bystander_neutral() -> None:
    rows = _rows()
    by_id = {r.id: r for r in rows}
    names = {n for ns in BYSTANDERS.values() for n in ns}
    out = bystander_records(rows, 60, seed=1)
    assert len(out) == 120
    for target_rec, bys in zip(out[::2], out[1::2]):
        src = by_id[target_rec.id.split(":")[1]]
        assert target_rec.text == bys.text and src.text.rstrip(".") in bys.text
        assert target_rec.source == bys.source == "pairs"
        q_target, q_bys = target_rec.questions()[0], bys.questions()[0]
        assert q_target.label == src.label and q_target.target in {"AAPL", "INTC", "MSFT", "TSLA", "GS", "KO"}
        assert q_bys.label == "neutral" and q_bys.score is None and q_bys.target in names  # labels only
        # the bystander is new to the row and never the target under another name
        assert not target_spans(src.text, *resolve_target(q_bys.target.removeprefix("the ")))
        assert resolve_target(q_bys.target)[1] != q_target.target
    assert "NVDA" not in {r.targets[0].target for r in out}  # two targets: not a single-target row
    assert bystander_records(rows, 60, seed=1) == out  # seeded
    roles = Counter(next(r for r, ns in BYSTANDERS.items() if t.targets[0].target in ns) for t in out[1::2])
    assert set(roles) == set(TEMPLATES)  # every role is drawn
    polar = sum(r.label != "neutral" for r in out[::2])
    assert polar > 0.7 * len(out[::2])  # mostly polar targets beside the neutral bystander


def test_no_rows_or_no_texts_give_nothing() -> None:
    assert bystander_records([], 5, seed=0) == [] and bystander_records(_rows(), 0, seed=0) == []
