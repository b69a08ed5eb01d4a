"""The FinEntity reader (records, tickers from US RICs, file:line errors) and our split by paragraph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tickerpulse.data.convert import convert, record_to_chat
from tickerpulse.data.finentity import finentity_sizes, paragraph_id, paragraph_kind, split_paragraphs, target_records
from tickerpulse.data.formats import DataError, load_jsonl
from tickerpulse.data.readers import read_records
from tickerpulse.data.records import MAX_ENTITIES, Record, detect_source
from tickerpulse.task.contract import parse_answer

from .cli import run_cli

TEXT = "Tesla Inc <TSLA.O> rose 3% while Ford <F.N> fell; BP <BP.L> and the S&P 500 <.SPX> were flat. Tesla led."
ROW = {"id": "fe-1", "text": TEXT, "entities": [
    {"name": "Tesla Inc", "start": 0, "end": 9, "label": "positive"},
    {"name": "Ford", "start": 33, "end": 37, "label": "negative"},
    {"name": "BP", "start": 50, "end": 52, "label": "neutral"},
    {"name": "S&P 500", "start": 68, "end": 75, "label": "neutral"},
]}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one(tmp_path: Path, row: dict) -> Record:
    [rec] = read_records(jsonl(tmp_path / "fe.jsonl", [row]))
    return rec


def test_one_target_per_mention_with_us_ric_tickers(tmp_path):
    assert TEXT[33:37] == "Ford" and TEXT[50:52] == "BP" and TEXT[68:75] == "S&P 500"
    rec = one(tmp_path, ROW)
    assert detect_source(ROW) == "finentity" and rec.source == "finentity" and rec.id == "fe-1"
    # a US listing (.O, .N) gives the symbol; a London (.L) or index (.SPX) RIC gives none
    # labels only: no target carries a score (a stock value would pass for an annotation)
    assert [(t.target, t.ticker, t.label, t.score) for t in rec.targets] == [
        ("Tesla Inc", "TSLA", "positive", None), ("Ford", "F", "negative", None),
        ("BP", None, "neutral", None), ("S&P 500", None, "neutral", None)]
    assert rec.tickers == ["TSLA", "F"] and rec.score is None
    assert rec.label == "neutral"  # mean of the labels' stock scores 0.0, as FiQA's record label
    assert [(q.target, q.label, q.score) for q in rec.questions(limit=2)] == [
        ("Tesla Inc", "positive", None), ("Ford", "negative", None)]
    assert Record.from_dict(rec.to_dict()).to_dict() == rec.to_dict()  # `--to records` reads back the same


def test_a_names_ric_applies_to_its_other_mentions_and_offsets_are_optional(tmp_path):
    row = {"text": "Apple <AAPL.OQ> beat. Later Apple slipped and Nvidia rose.",
           "entities": [{"name": "Apple", "start": 28, "end": 33, "label": "negative"},
                        {"name": "Apple", "start": 0, "end": 5, "label": "positive"},
                        {"name": "Nvidia", "label": "positive"}]}  # no offsets: the name is looked up
    rec = one(tmp_path, row)
    assert [(t.target, t.ticker) for t in rec.targets] == [("Apple", "AAPL"), ("Apple", "AAPL"), ("Nvidia", None)]
    assert rec.id == "finentity-0" and rec.label == "positive"  # mean 0.7 / 3


@pytest.mark.parametrize("entities,reason", [
    ([], "entities must be a non-empty list"),
    ("Tesla", "entities must be a non-empty list"),
    ([["Tesla"]], r"entities\[0\] must be an object"),
    ([{"name": "Tesla", "label": "positive"}], r"entities\[0\].name 'Tesla' is not in the text"),
    ([{"name": "", "label": "positive"}], r"entities\[0\].name must be a non-empty string"),
    ([{"name": 7, "label": "positive"}], r"entities\[0\].name must be a non-empty string"),
    ([{"name": "Ford", "start": 0, "end": 4, "label": "positive"}], r"text\[0:4\] is 'Sony', not the name 'Ford'"),
    ([{"name": "Sony", "start": 0, "end": 99, "label": "positive"}], "start/end 0/99 are not offsets"),
    ([{"name": "Sony", "start": True, "end": 4, "label": "positive"}], "start/end True/4 are not offsets"),
    ([{"name": "Sony", "start": 0, "label": "positive"}], "start/end 0/None are not offsets"),
    ([{"name": "Sony", "start": 0, "end": 4, "label": "bullish-ish"}], "unknown label 'bullish-ish'"),
    ([{"name": "Sony", "start": 0, "end": 4}], "missing field 'label'"),
    ([{"name": "Sony", "label": "neutral"}] * (MAX_ENTITIES + 1), f"{MAX_ENTITIES + 1} entities in one paragraph"),
])
def test_broken_rows_are_file_line_errors(tmp_path, entities, reason):
    path = jsonl(tmp_path / "fe.jsonl", [ROW, {"id": "x", "text": "Sony shares rose", "entities": entities}])
    with pytest.raises(DataError, match=rf"fe.jsonl:2: .*{reason}.*\(reading as finentity\)"):
        read_records(path, "finentity")


def test_chat_rows_ask_each_entity_by_name(tmp_path):
    """One row per entity, asked by its name; the ticker is the contract's one rule for that name (the company
    table's symbol, an upper-case name such as BP is a symbol), not the RIC of the mention."""
    rows = record_to_chat(one(tmp_path, ROW))
    got = [(r["meta"]["target"], r["meta"]["ticker"], r["meta"]["label"], r["meta"]["score"]) for r in rows]
    assert got == [("Tesla Inc", "TSLA", "positive", 0.7), ("Ford", "F", "negative", -0.7),
                   ("BP", "BP", "neutral", 0.0), ("S&P 500", None, "neutral", 0.0)]
    answer, err = parse_answer(rows[3]["messages"][-1]["content"])
    assert err is None and answer.target == "S&P 500" and answer.ticker is None
    assert "gold FinEntity label" in answer.reasoning and answer.reasoning.endswith("neutral for S&P 500.")
    assert "Target: S&P 500\n" in rows[3]["messages"][1]["content"]


def test_many_long_names_are_one_row_each(tmp_path):
    names = [f"Company number {i} of a long list" for i in range(30)]
    row = {"text": ", ".join(names) + " all rose.", "entities": [{"name": n, "label": "positive"} for n in names]}
    chats = record_to_chat(one(tmp_path, row))
    assert [c["meta"]["target"] for c in chats] == names
    for chat, name in zip(chats, names, strict=True):
        answer, err = parse_answer(chat["messages"][-1]["content"])
        assert err is None and answer.target == name and answer.reasoning.endswith(f"positive for {name}.")


def test_a_name_longer_than_a_target_is_a_file_line_error(tmp_path):
    name = "A" * 40 + " " + "b" * 40  # 81 characters: more than the answer schema's target holds
    src = jsonl(tmp_path / "fe.jsonl", [ROW, {"id": "long", "text": f"{name} rose.", "entities": [
        {"name": name, "label": "positive"}]}])
    with pytest.raises(DataError, match="fe.jsonl:2: record long: target has 81 characters"):
        convert([src], "chat", tmp_path / "chat.jsonl")
    assert not (tmp_path / "chat.jsonl").exists()  # nothing half-written


def test_cli_convert_accepts_finentity(tmp_path):
    src = jsonl(tmp_path / "finentity.jsonl", [ROW])
    res = run_cli("data", "convert", src, "--format", "finentity", "--to", "chat", "--out", tmp_path / "chat.jsonl")
    assert res.code == 0, res.output
    assert "4 chat rows" in res.stdout and "3 with a ticker" in res.stdout
    rows, fmt = load_jsonl(tmp_path / "chat.jsonl")
    assert fmt == "chat" and len(rows) == 4
    res = run_cli("data", "convert", jsonl(tmp_path / "bad.jsonl", [{"text": "x", "entities": [{}]}]), "--to",
                  "records", "--out", tmp_path / "r.jsonl")
    assert res.code == 2 and "bad.jsonl:1: missing field 'name' (reading as finentity)" in res.output


# ------------------------------------------------------------------------------------------------- split

def _paragraphs(tmp_path: Path, n: int) -> list[Record]:
    labels = ("positive", "neutral", "negative")
    rows = []
    for i in range(n):
        ents = [{"name": "Acme", "label": labels[i % 3]}]
        if i % 5 == 0:  # every fifth paragraph names a second company with another label
            ents.append({"name": "Beta", "label": labels[(i + 1) % 3]})
        rows.append({"id": f"p{i}", "text": f"Paragraph {i}: Acme and Beta news.", "entities": ents})
    rows.append(dict(rows[3]))  # the same paragraph twice, as in the shared file
    return read_records(jsonl(tmp_path / "fe.jsonl", rows))


def test_split_is_by_paragraph_seeded_and_stratified_by_kind(tmp_path):
    recs = _paragraphs(tmp_path, 200)
    assert Counter(paragraph_kind(r) for r in recs[:10]) == {"conflict": 2, "positive": 3, "neutral": 3,
                                                                "negative": 2}
    parts = split_paragraphs(recs, valid=0.1, test=0.2, seed=0)
    ids = {s: [r.id for r in rs] for s, rs in parts.items()}
    assert sum(map(len, ids.values())) == len(recs)
    assert ids["test"].count("p3") + ids["valid"].count("p3") + ids["train"].count("p3") == 2
    assert len({i for s in ids for i in set(ids[s])}) == 200  # no paragraph in two splits
    assert not (set(ids["train"]) & set(ids["test"])) and not (set(ids["train"]) & set(ids["valid"]))
    sizes = finentity_sizes(parts)
    assert sizes["test"]["kinds"]["conflict"] == 8 and sizes["valid"]["kinds"]["conflict"] == 4  # 40 of 200
    assert sizes["test"]["rows"] in (39, 40, 41) and sizes["valid"]["rows"] in (19, 20, 21)  # within half a group
    assert split_paragraphs(recs, seed=0) == parts
    assert {r.id for r in split_paragraphs(recs, seed=1)["test"]} != set(ids["test"])
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_paragraphs(recs, valid=0.5, test=0.5)


def test_real_finentity_reads_converts_and_splits_as_documented(shared_data, tmp_path):
    path = shared_data / "finentity" / "finentity.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    recs = read_records(path)
    assert len(recs) == 778 and sum(len(r.targets) for r in recs) == 1664
    assert sum(t.ticker is not None for r in recs for t in r.targets) == 405
    sizes = finentity_sizes(split_paragraphs(recs))
    assert {s: (v["paragraphs"], v["targets"], v["kinds"]["conflict"]) for s, v in sizes.items()} == {
        "train": (539, 1174, 74), "valid": (78, 152, 10), "test": (153, 322, 20)}  # docs/data.md
    report = convert([path], "chat", tmp_path / "chat.jsonl")
    # one row per distinct entity name of a paragraph (a name mentioned twice is asked once: its label, or
    # the label of its labels' mean stock score when they disagree)
    assert report.rows == sum(len({t.target for t in r.targets}) for r in recs)
    assert report.records == 778 and report.rows == 1579 and report.with_ticker == 680  # docs/data.md


def test_target_records_one_per_distinct_entity(tmp_path):
    """The recipe's per-entity records: one per distinct name of a paragraph (its gold, the RIC symbol of any
    of its mentions), a name annotated with two labels left out as ambiguous, a repeated paragraph once."""
    row = {"id": "p", "text": "Apple <AAPL.OQ> beat. Later Apple slipped; Nvidia rose and Ford fell, Ford said.",
           "entities": [{"name": "Apple", "start": 0, "end": 5, "label": "positive"},
                        {"name": "Apple", "start": 28, "end": 33, "label": "negative"},
                        {"name": "Nvidia", "label": "positive"},
                        {"name": "Ford", "start": 59, "end": 63, "label": "negative"},
                        {"name": "Ford", "start": 70, "end": 74, "label": "negative"}]}
    recs = read_records(jsonl(tmp_path / "fe.jsonl", [ROW, row, row]))
    out, ambiguous = target_records(recs)
    assert ambiguous == 1  # Apple: positive and negative in one paragraph
    assert [(r.id, r.targets[0].target, r.targets[0].ticker, r.label) for r in out] == [
        ("fe-1#0", "Tesla Inc", "TSLA", "positive"), ("fe-1#1", "Ford", "F", "negative"),
        ("fe-1#2", "BP", None, "neutral"), ("fe-1#3", "S&P 500", None, "neutral"),
        ("p#1", "Nvidia", None, "positive"), ("p#2", "Ford", None, "negative")]
    assert all(len(r.questions(limit=None)) == 1 and r.text in (TEXT, row["text"]) for r in out)


def test_paragraph_id_inverts_the_question_ids(tmp_path):
    """Every question `target_records` writes (and its injected copies) maps back to its paragraph, also when the
    paragraph id holds a `#` itself."""
    rows = [{"id": "news#7", "text": "Apple rose; Ford fell.", "entities": [{"name": "Apple", "label": "positive"},
                                                                           {"name": "Ford", "label": "negative"}]}]
    out, _ = target_records(read_records(jsonl(tmp_path / "fe.jsonl", rows)))
    assert [r.id for r in out] == ["news#7#0", "news#7#1"]
    assert {paragraph_id(r.id) for r in out} == {paragraph_id(f"{r.id}:inj-plea") for r in out} == {"news#7"}
