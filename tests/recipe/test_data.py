"""Split assembly: deterministic, stratified, duplicate groups never straddle splits, test never in train."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tickerpulse.data.records import Record
from tickerpulse.data.split import normalize_text
from tickerpulse.recipe.config import SplitConfig
from tickerpulse.recipe.data import assemble, sample_records, split_records, to_record


def _rows(n: int) -> list[Record]:
    labels = ["neutral"] * 6 + ["positive"] * 3 + ["negative"]
    rows = [Record(f"r{i}", f"headline number {i} about $AAPL", labels[i % 10], "records", tickers=["AAPL"],
                   dataset="x") for i in range(n)]
    # normalised duplicates: same text, another link
    rows += [Record(f"d{i}", f"headline number {i} about $AAPL https://t.co/x{i}", rows[i].label, "records",
                    tickers=["AAPL"], dataset="x") for i in range(0, 40, 4)]
    return rows


def test_split_records_deterministic_and_grouped() -> None:
    rows = _rows(200)
    a = split_records(rows, {"test": 0.2, "valid": 0.1}, seed=3)
    b = split_records(rows, {"test": 0.2, "valid": 0.1}, seed=3)
    assert {k: [r.id for r in v] for k, v in a.items()} == {k: [r.id for r in v] for k, v in b.items()}
    c = split_records(rows, {"test": 0.2, "valid": 0.1}, seed=4)
    assert [r.id for r in a["test"]] != [r.id for r in c["test"]]
    assert sum(len(v) for v in a.values()) == len(rows)
    part_of_norm: dict[str, set[str]] = {}
    for part, rs in a.items():
        for r in rs:
            part_of_norm.setdefault(normalize_text(r.text), set()).add(part)
    assert all(len(p) == 1 for p in part_of_norm.values()), "a duplicate group straddles two splits"
    # stratified: each label's share of the test split is close to its share overall
    overall, test = Counter(r.label for r in rows), Counter(r.label for r in a["test"])
    for lab in overall:
        assert abs(test[lab] / len(a["test"]) - overall[lab] / len(rows)) < 0.05


def test_sample_records_keeps_label_shares() -> None:
    rows = _rows(300)
    s = sample_records(rows, 100, seed=0)
    assert len(s) == 100 and s == sample_records(rows, 100, seed=0)
    c = Counter(r.label for r in s)
    assert 55 <= c["neutral"] <= 65 and 8 <= c["negative"] <= 12
    assert sample_records(rows, None, 0) == rows


def test_to_record_is_the_question_distill_and_eval_ask() -> None:
    """FiQA: the first annotated target with its own score (not the record's mean), asked first in tickers."""
    from tickerpulse.data.records import Target

    rec = Record("p1", "$GRPN and $P today", "negative", "fiqa", score=-0.05, tickers=["P", "GRPN"],
                 targets=[Target("P", -0.2, "P"), Target("Groupon", 0.1)])
    r = to_record(rec, "fiqa")
    assert (r.label, r.score, r.tickers, r.dataset) == ("negative", -0.2, ["P", "GRPN"], "fiqa")
    assert r.questions() == rec.questions() and r.to_dict()["dataset"] == "fiqa"
    # named companies only: the question is about them (None), so no symbol is asked first
    names = Record("h1", "CRH's bid for Holcim assets", "positive", "fiqa", score=0.28, tickers=["CRH"],
                   targets=[Target("Holcim", 0.282)])
    r = to_record(names, "fiqa")
    assert (r.tickers, r.score, r.questions()[0].ticker) == ([], 0.282, None)


def test_assemble_real_data_no_leakage(shared_data: Path) -> None:
    cfg = SplitConfig(train_limit={"tfns": 500, "fpb": None, "fiqa": None})
    data = assemble(shared_data, cfg, seed=0)
    again = assemble(shared_data, cfg, seed=0)
    for ds, splits in data.items():
        for split, rows in splits.items():
            assert [r.id for r in rows] == [r.id for r in again[ds][split]], f"{ds}/{split} not deterministic"
        train = {normalize_text(r.text) for r in splits["train"]}
        valid = {normalize_text(r.text) for r in splits["valid"]}
        test = {normalize_text(r.text) for r in splits["test"]}
        assert not train & test, f"{ds}: test text in train"
        assert not valid & test and not train & valid, f"{ds}: valid overlaps"
    assert len(data["tfns"]["test"]) == 1194  # valid-a is kept whole as the benchmark
    assert len(data["tfns"]["valid"]) == 300 and len(data["tfns"]["train"]) == 500
    assert all(r.id.startswith("tfns-valid-") for r in data["tfns"]["test"])
    assert all(r.id.startswith("tfns-train-") for r in data["tfns"]["train"] + data["tfns"]["valid"])
    # FiQA rows carry real scores; PhraseBank and twitter carry none
    assert all(r.score is not None for r in data["fiqa"]["test"])
    assert all(r.score is None for r in data["fpb"]["test"])
    n_fpb = sum(len(v) for v in data["fpb"].values())
    assert abs(len(data["fpb"]["test"]) / n_fpb - 0.2) < 0.02


def test_chat_answers_carry_each_rows_gold(shared_data: Path, tmp_path: Path) -> None:
    """The gold teacher's chat answers keep every row's own judgement: FiQA's real per-target score (not the
    label's stock +-0.7) and the row's dataset, also for injection-augmented copies."""
    import json

    from tickerpulse.data.formats import iter_jsonl
    from tickerpulse.recipe.config import RecipeConfig
    from tickerpulse.recipe.sentiment import distill_chat

    cfg = RecipeConfig(shared_data=shared_data, out=tmp_path, injection_augment=0.5, soft_label={"fiqa": 0.5},
                       splits=SplitConfig(limit_per_dataset=40, pairs=6, bystanders=3,
                                          repeat={"finentity": 2, "fpb": 3}))
    data = assemble(shared_data, cfg.splits, seed=0)
    chat = distill_chat(cfg, data, tmp_path, log=lambda *_: None)
    gold = {r.id: r for ds in data.values() for r in ds["train"]}
    rows = [row for _, row in iter_jsonl(chat / "train.jsonl")]
    seen = Counter()
    for row in rows:
        meta, ans = row["meta"], json.loads(row["messages"][-1]["content"])
        src = gold[meta["id"].partition(":inj-")[0]]
        assert ans["sentiment"] == src.label and meta["source"] == src.dataset, meta["id"]
        assert ans["target"] == src.questions()[0].target, meta["id"]  # each row asks its own target
        if src.score is not None:
            assert ans["score"] == pytest.approx(round(src.score, 2)), meta["id"]
        # soft labels on FiQA's rows only (soft_label), unless the score is 0 or +-1 (then q(score) is the label)
        assert ("soft_target" in row) == (src.dataset == "fiqa" and 0 < abs(ans["score"]) < 1), meta["id"]
        seen[src.dataset] += 1
    assert set(seen) == {"tfns", "fpb", "fiqa", "finentity", "pairs"} and sum(seen.values()) == len(rows)
    # every FinEntity train question twice and PhraseBank row three times (repeat), both questions of each pair
    assert seen["finentity"] >= 2 * len(data["finentity"]["train"]) and seen["finentity"] % 2 == 0
    assert seen["fpb"] >= 3 * len(data["fpb"]["train"]) and seen["fpb"] % 3 == 0
    assert seen["pairs"] >= len(data["pairs"]["train"]) == 12 + 6  # pairs and bystander texts: two questions each
    assert sum(r.id.startswith("bys") for r in data["pairs"]["train"]) == 6


def test_repeats_weight_datasets_and_finentity_conflict_questions(tmp_path: Path) -> None:
    from tickerpulse.recipe.config import RecipeConfig
    from tickerpulse.recipe.sentiment import _repeats

    ent = [Record(id=f"finentity-{p}#{k}", text="t", label=lab, source="finentity", dataset="finentity")
           for p, labels in (("a", ["positive", "neutral"]), ("b", ["negative", "negative"]))
           for k, lab in enumerate(labels)]
    cfg = RecipeConfig(out=tmp_path, splits=SplitConfig(repeat={"fpb": 2, "finentity": 2}, conflict_repeat=3))
    times = _repeats(cfg, {"finentity": {"train": ent}})

    def row(id_: str, source: str) -> dict:
        return {"meta": {"id": id_, "source": source}}

    assert times(row("finentity-a#1", "finentity")) == 6  # a conflict paragraph's question: 2 x 3
    assert times(row("finentity-a#0:inj-plea", "finentity")) == 6  # its injected copy too
    assert times(row("finentity-b#0", "finentity")) == 2  # one label: the dataset's repeat only
    assert times(row("fpb-train-1", "fpb")) == 2 and times(row("tfns-train-1", "tfns")) == 1
    with pytest.raises(ValueError, match="unknown dataset"):
        SplitConfig(repeat={"reddit": 2})
    with pytest.raises(ValueError, match=r"repeat: each value must be in \[1, 8\]"):
        SplitConfig(repeat={"fpb": 0})
    with pytest.raises(ValueError, match="train_limit: unknown dataset"):
        SplitConfig(train_limit={"reddit": 10})
    with pytest.raises(ValueError, match=r"full_answer_share: each value must be in \[0.0, 1.0\]"):
        RecipeConfig(out=tmp_path, full_answer_share={"fiqa": 1.5})


def test_agreeing_questions_caps_only_paragraphs_whose_entities_agree() -> None:
    from tickerpulse.recipe.data import _cap_agreeing

    def q(p: str, k: int, label: str) -> Record:
        return Record(f"finentity-{p}#{k}", "t", label, "finentity", dataset="finentity")

    qs = ([q("agree", k, "positive") for k in range(4)] + [q("conflict", k, lab) for k, lab in
          enumerate(["positive", "negative", "neutral"])] + [q("single", 0, "neutral")])
    assert _cap_agreeing(qs, None, 0) == qs
    kept = _cap_agreeing(qs, 1, 0)
    by = Counter(r.id.partition("#")[0] for r in kept)
    assert by == {"finentity-agree": 1, "finentity-conflict": 3, "finentity-single": 1}
    assert kept == _cap_agreeing(qs, 1, 0) and [r for r in qs if r in kept] == kept  # seeded, order kept
    assert len(_cap_agreeing(qs, 2, 0)) == 6


@pytest.mark.parametrize("label,score", [("positive", 0.3), ("positive", 0.9), ("negative", -0.45), ("neutral", 0.05),
                                         ("neutral", -0.08)])
def test_soft_label_makes_the_label_margin_follow_the_score(label: str, score: float) -> None:
    from tickerpulse.recipe.sentiment import soft_label
    from tickerpulse.task.contract import LABEL_AFTER

    answer = {"ticker": "X", "target": "X", "sentiment": label, "score": score, "reasoning": ""}
    row = {"messages": [{"role": "user", "content": "t"}, {"role": "assistant", "content": json.dumps(answer)}],
           "meta": {"source": "fiqa"}}
    soft = soft_label(row, 0.5)["soft_target"]
    assert soft["after"] == LABEL_AFTER and label not in soft["also"]
    # the trained distribution: own label 1, the others their ratio, normalised
    mass = {label: 1.0, **soft["also"]}
    total = sum(mass.values())
    p = {k: mass.get(k, 0.0) / total for k in ("positive", "neutral", "negative")}
    # p(pos) - p(neg) is halfway between the label's sign and the score itself, and the label stays most likely
    sign = {"positive": 1, "neutral": 0, "negative": -1}[label]
    assert p["positive"] - p["negative"] == pytest.approx(0.5 * sign + 0.5 * score, abs=1e-5)  # ratios kept to 6 places
    assert max(p, key=p.get) == label
    assert soft_label(row, 0.0) == row  # share 0: a plain row
