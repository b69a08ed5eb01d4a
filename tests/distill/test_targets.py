"""Distill asks about targets: FinEntity-like paragraphs with named entities through the gold teacher, each
row's answer and meta carrying the asked target (the name) and its symbol (the company table's, or null)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tickerpulse.data.finentity import target_records
from tickerpulse.data.formats import load_jsonl
from tickerpulse.data.readers import read_records
from tickerpulse.distill.inputs import load_raw
from tickerpulse.distill.teacher import GoldTeacher, Item, check_answer
from tickerpulse.task.contract import build_messages, format_answer, load_prompt, parse_answer

from ..data.cli import run_cli

TEXT = "Tesla shares jumped on record deliveries, while Royal Mail slumped after its profit warning."
PARAGRAPH = {"id": "fe-two", "text": TEXT, "entities": [{"name": "Tesla", "label": "positive"},
                                                       {"name": "Royal Mail", "label": "negative"}]}
FORD = {"id": "fe-ford", "text": "Ford cut its outlook again as costs kept rising.",
        "entities": [{"name": "Ford", "label": "negative"}]}
EXPECTED = [("Tesla", "TSLA", "positive", 0.7), ("Royal Mail", None, "negative", -0.7)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gold_teacher_answers_each_named_target_of_a_paragraph(tmp_path):
    """The record's two questions (one per entity, by name) give two answers, each about its own target with
    its own gold label; the job's check accepts them as they are written."""
    [rec] = read_records(_jsonl(tmp_path / "fe.jsonl", [PARAGRAPH]))
    questions = rec.questions(limit=None)
    items = [Item(q.id, q.text, q.target, list(q.tickers), q.label, q.score, q.source) for q in questions]

    async def go():
        return [await GoldTeacher().label(it) for it in items]

    rows = []
    for it, out in zip(items, asyncio.run(go()), strict=True):
        assert out.status == "ok", out.reason
        ans = out.answer
        assert list(ans) == ["target", "ticker", "sentiment", "score", "reasoning"]
        assert ans["reasoning"] == f"Template (gold FinEntity label, no model reasoning): {ans['sentiment']} for {it.target}."
        content = format_answer(it.target, ans["sentiment"], ans["score"], ans["reasoning"])
        checked, reason = check_answer(content, it.target, it.tickers)
        assert reason is None, reason
        rows.append((checked.target, checked.ticker, checked.sentiment, checked.score))
    assert rows == EXPECTED
    assert [q.id for q in questions] == ["fe-two:Tesla", "fe-two:Royal Mail"]


def test_distill_reads_finentity_as_labeled_and_asks_the_first_entity_by_name(tmp_path):
    """`--input` a FinEntity file: its entity labels are the gold (it was read as unlabeled text before);
    each paragraph's row asks about its first entity by name, meta holding target and ticker."""
    src = _jsonl(tmp_path / "finentity.jsonl", [PARAGRAPH, FORD])
    assert [(r.source, r.label) for r in load_raw(src)] == [("finentity", "neutral"), ("finentity", "negative")]
    out = tmp_path / "out"
    res = run_cli("distill", "--quiet", "--teacher", "gold", "--cache", tmp_path / "cache.sqlite", "--input", src,
                  "--out", out, "--n-train", "2", "--n-valid", "0", "--n-test", "0")
    assert res.code == 0, res.output
    rows, fmt = load_jsonl(out / "train.jsonl")
    assert fmt == "chat"
    got = {}
    for row in rows:
        m = row["meta"]
        answer, err = parse_answer(row["messages"][2]["content"])
        assert err is None, err
        assert row["messages"][:2] == build_messages(m["text"], m["target"])
        assert row["messages"][1]["content"].startswith(f"Target: {m['target']}\n")
        assert (m["target"], m["ticker"]) == (answer.target, answer.ticker)
        assert m["prompt_version"] == "sentiment-v3" and m["prompt_hash"] == load_prompt()["hash"]
        assert m["label"] == m["gold_label"] == answer.sentiment and m["source"] == "finentity"
        got[m["record_id"]] = (answer.target, answer.ticker, answer.sentiment, answer.score)
    assert got == {"fe-two": EXPECTED[0], "fe-ford": ("Ford", "F", "negative", -0.7)}


def test_one_record_per_entity_distills_to_one_row_per_named_target(tmp_path):
    """A paragraph with two named entities, as the recipe feeds it (`data.finentity.target_records`: one
    record per entity): two rows, each about its entity by name with its own gold label and its symbol (or
    null), never dropped as duplicates of each other."""
    records, ambiguous = target_records(read_records(_jsonl(tmp_path / "fe.jsonl", [PARAGRAPH, FORD])))
    assert ambiguous == 0 and [r.targets[0].target for r in records] == ["Tesla", "Royal Mail", "Ford"]
    src = _jsonl(tmp_path / "records.jsonl", [r.to_dict() for r in records])
    out = tmp_path / "out"
    res = run_cli("distill", "--quiet", "--teacher", "gold", "--cache", tmp_path / "cache.sqlite", "--input", src,
                  "--out", out, "--n-train", "3", "--n-valid", "0", "--n-test", "0")
    assert res.code == 0, res.output
    counts = json.loads((out / "report.json").read_text())["counts"]
    assert counts["exact_duplicates_dropped"] == 0 and counts["written"] == {"train": 3}
    rows = {r["meta"]["target"]: r for r in load_jsonl(out / "train.jsonl")[0]}
    assert set(rows) == {"Tesla", "Royal Mail", "Ford"}
    got = []
    for target in ("Tesla", "Royal Mail"):
        row = rows[target]
        answer, err = parse_answer(row["messages"][2]["content"])
        marked = TEXT.replace(target, f"«{target}»")  # sentiment-v3 marks the target's mentions
        assert err is None and row["messages"][1]["content"].startswith(f"Target: {target}\n<post>\n{marked}")
        assert (row["meta"]["target"], row["meta"]["ticker"], row["meta"]["gold_label"]) == (
            answer.target, answer.ticker, answer.sentiment)
        got.append((answer.target, answer.ticker, answer.sentiment, answer.score))
    assert got == EXPECTED
