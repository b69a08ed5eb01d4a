"""Labeled records from each dataset shape, conversion to chat JSONL, and `tickerpulse data convert`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.data.convert import convert, record_to_chat
from tickerpulse.data.formats import DataError, load_jsonl
from tickerpulse.data.readers import CsvColumns, read_records
from tickerpulse.data.records import Record, detect_source
from tickerpulse.task.contract import (
    LABEL_SCORES,
    build_messages,
    load_prompt,
    parse_answer,
)

# One row in the shape of each shared dataset (and of the hub versions), written here.
TFNS = {"id": "tfns-train-1", "text": "$CCL $RCL - Bookings weakness at two cruise lines", "label": "negative",
        "original_label": 0, "tickers": ["CCL", "RCL"]}
TFNS_HUB = {"text": "Stocks rally into the close", "label": 1}
FPB = {"id": "fpb-allagree-7", "text": "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .", "label": "positive"}
FPB_HUB = {"sentence": "Net sales fell 5 % .", "label": 0}
FIQA_POST = {"id": "fiqa-post-1", "kind": "post", "text": "$GRPN might be selling off ahead of $P earnings...",
             "targets": [{"target": "P", "score": -0.202, "aspects": ["Stock"]}], "tickers": ["GRPN", "P"],
             "score": -0.202, "label": "negative"}
FIQA_HEADLINE = {"id": "fiqa-headline-2", "kind": "headline", "text": "Tesco sells unit to TalkTalk",
                 "targets": [{"target": "TalkTalk", "score": 0.136, "aspects": []},
                             {"target": "Tesco", "score": 0.192, "aspects": []}],
                 "tickers": [], "score": 0.164, "label": "positive"}
PLAIN = {"text": "$TSLA deliveries beat", "label": "bullish"}


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("row,source", [
    (TFNS, "tfns"), (TFNS_HUB, "tfns"), (FPB, "fpb"), (FPB_HUB, "fpb"), (FIQA_POST, "fiqa"),
    (FIQA_HEADLINE, "fiqa"), (PLAIN, "records"),
    ({"id": "r1", "text": "x", "label": "neutral", "source": "csv"}, "records"),
])
def test_detect_source(row, source):
    assert detect_source(row) == source


def test_detect_source_rejects_chat_and_unknown():
    with pytest.raises(ValueError, match="already chat"):
        detect_source({"messages": []})
    with pytest.raises(ValueError, match="pass --format"):
        detect_source({"body": "x"})


# (row, expected record dict)
RECORD_CASES = [
    (TFNS, {"id": "tfns-train-1", "label": "negative", "tickers": ["CCL", "RCL"], "source": "tfns"}),
    (TFNS_HUB, {"id": "tfns-0", "label": "positive", "source": "tfns"}),
    (FPB, {"id": "fpb-allagree-7", "label": "positive", "source": "fpb"}),
    (FPB_HUB, {"id": "fpb-0", "text": "Net sales fell 5 % .", "label": "negative", "source": "fpb"}),
    (FIQA_POST, {"label": "negative", "score": -0.202, "tickers": ["P", "GRPN"],
                 "targets": [{"target": "P", "ticker": "P", "score": -0.202, "label": "negative"}]}),
    (FIQA_HEADLINE, {"label": "positive", "score": 0.164, "targets": [
        {"target": "TalkTalk", "ticker": None, "score": 0.136, "label": "positive"},
        {"target": "Tesco", "ticker": None, "score": 0.192, "label": "positive"}]}),
    (PLAIN, {"label": "positive", "tickers": ["TSLA"], "source": "plain"}),
]


def test_mixed_records_file_keeps_each_rows_fields(tmp_path):
    """A records file whose first row is a twitter record must not read every row as twitter: FiQA's real
    score and every row's source survive (the recipe writes one such file per split)."""
    rows = [rec.to_dict() for row in (TFNS, FIQA_POST, FPB)
            for rec in read_records(jsonl(tmp_path / "one.jsonl", [row]))]
    mixed = read_records(jsonl(tmp_path / "mixed.jsonl", rows))
    assert [r.to_dict() for r in mixed] == rows
    assert [(r.source, r.score) for r in mixed] == [("tfns", None), ("fiqa", -0.202), ("fpb", None)]


def test_concatenated_dataset_files_keep_each_rows_fields(tmp_path):
    """Shared files joined into one (twitter first): each row is read by its own dataset's reader."""
    singles = [read_records(jsonl(tmp_path / f"{i}.jsonl", [row]))[0].to_dict()
               for i, row in enumerate((TFNS, FIQA_POST, FPB))]
    mixed = read_records(jsonl(tmp_path / "joined.jsonl", [TFNS, FIQA_POST, FPB]))
    assert [r.to_dict() for r in mixed] == singles
    assert mixed[1].targets and mixed[1].score == -0.202


@pytest.mark.parametrize("row,expected", RECORD_CASES)
def test_records_from_each_shape(tmp_path, row, expected):
    [rec] = read_records(jsonl(tmp_path / "plain.jsonl", [row]))
    d = rec.to_dict()
    for key, value in expected.items():
        assert d[key] == value, key
    assert d["text"] == row.get("text", row.get("sentence"))
    assert Record.from_dict(d).to_dict() == d  # records round-trip


# (row, expected [(target, ticker, label, score)] of the chat rows)
CHAT_CASES = [
    (TFNS, [("CCL", "CCL", "negative", LABEL_SCORES["negative"]), ("RCL", "RCL", "negative", LABEL_SCORES["negative"])]),
    (FPB, [(None, None, "positive", LABEL_SCORES["positive"])]),
    (FIQA_POST, [("P", "P", "negative", -0.2)]),  # GRPN has no gold target: no invented answer for it
    # each company name is asked by name with its own score; the company table knows neither symbol
    (FIQA_HEADLINE, [("TalkTalk", None, "positive", 0.14), ("Tesco", None, "positive", 0.19)]),
]


@pytest.mark.parametrize("row,expected", CHAT_CASES)
def test_chat_rows_one_per_target(tmp_path, row, expected):
    [rec] = read_records(jsonl(tmp_path / "in.jsonl", [row]))
    rows = record_to_chat(rec)
    got = []
    for r in rows:
        msgs = r["messages"]
        assert msgs[:2] == build_messages(rec.text, r["meta"]["target"])
        assert f"Target: {r['meta']['target'] or 'none'}\n" in msgs[1]["content"]
        answer, err = parse_answer(msgs[2]["content"])
        assert err is None, err
        assert answer.reasoning.startswith("Template (gold ")  # templated reasoning says so
        assert r["meta"]["reasoning"] == "template" and r["meta"]["prompt_hash"] == load_prompt()["hash"]
        assert r["meta"]["prompt_version"] == "sentiment-v3"
        assert list(json.loads(msgs[2]["content"])) == ["target", "ticker", "sentiment", "score", "reasoning"]
        assert (r["meta"]["target"], r["meta"]["ticker"]) == (answer.target, answer.ticker)
        got.append((answer.target, answer.ticker, answer.sentiment, answer.score))
    assert got == expected
    assert len({r["meta"]["id"] for r in rows}) == len(rows)


def test_v1_chat_rows_show_the_symbol_and_answer_without_target(tmp_path):
    """Models trained before targets keep their prompt: `Ticker:` shows the symbol, the answer has no target
    key, and the names it cannot tell apart (no symbol: `Ticker: none`) are one question with their mean score
    instead of one prompt with several answers."""
    row = {"id": "fe-3", "text": "TalkTalk rose, Royal Mail fell, Tesla and Tesla Inc rallied.", "entities": [
        {"name": "TalkTalk", "label": "positive"}, {"name": "Royal Mail", "label": "negative"},
        {"name": "Tesla", "label": "positive"}, {"name": "Tesla Inc", "label": "positive"}]}
    [rec] = read_records(jsonl(tmp_path / "in.jsonl", [row]))
    v2 = record_to_chat(rec)
    assert [(r["meta"]["target"], r["meta"]["ticker"], r["meta"]["label"]) for r in v2] == [
        ("TalkTalk", None, "positive"), ("Royal Mail", None, "negative"), ("Tesla", "TSLA", "positive"),
        ("Tesla Inc", "TSLA", "positive")]
    v1 = record_to_chat(rec, "sentiment-v1")
    assert [(r["meta"]["id"], r["meta"]["target"], r["meta"]["ticker"], r["meta"]["label"], r["meta"]["score"])
            for r in v1] == [("fe-3:None", None, None, "neutral", 0.0), ("fe-3:TSLA", "TSLA", "TSLA", "positive", 0.7)]
    prompts = [r["messages"][1]["content"] for r in v1]
    assert [p.split("\n")[0] for p in prompts] == ["Ticker: none", "Ticker: TSLA"] and len(set(prompts)) == 2
    for r in v1:
        answer = json.loads(r["messages"][2]["content"])
        assert list(answer) == ["ticker", "sentiment", "score", "reasoning"]
        assert r["meta"]["prompt_version"] == "sentiment-v1"
    assert json.loads(v1[0]["messages"][2]["content"])["reasoning"].endswith("neutral for the market.")
    [fiqa] = read_records(jsonl(tmp_path / "fiqa.jsonl", [FIQA_HEADLINE]))
    [one] = record_to_chat(fiqa, "sentiment-v1")  # TalkTalk 0.136 and Tesco 0.192: one market question
    assert (one["meta"]["id"], one["meta"]["label"], one["meta"]["score"]) == ("fiqa-headline-2", "positive", 0.16)


def test_fiqa_headline_reasoning_names_the_company_asked(tmp_path):
    [rec] = read_records(jsonl(tmp_path / "in.jsonl", [FIQA_HEADLINE]))
    talktalk, tesco = record_to_chat(rec)
    assert json.loads(talktalk["messages"][2]["content"])["reasoning"].endswith("positive for TalkTalk.")
    assert json.loads(tesco["messages"][2]["content"])["reasoning"].endswith("positive for Tesco.")


def test_extract_tickers_fills_missing_tickers(tmp_path):
    [rec] = read_records(jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Why $AMD and $nvda ran", "label": "positive"}]))
    assert rec.tickers == ["AMD", "NVDA"]
    assert [q.ticker for q in rec.questions(limit=None)] == ["AMD", "NVDA"]


@pytest.mark.parametrize("csv_text,cols,expected", [
    ("text,label\nStocks up,positive\n", CsvColumns(), [("Stocks up", "positive", None, [])]),
    ("headline;sent;sym\n$X beats;2;AAPL MSFT\n", CsvColumns(text="headline", label="sent", ticker="sym", delimiter=";",
                                                           label_map={"2": "positive"}),
     [("$X beats", "positive", None, ["AAPL", "MSFT"])]),
    ("t,s\nDown big,-0.8\nFlat,0.05\n", CsvColumns(text="t", label=None, score="s"),
     [("Down big", "negative", -0.8, []), ("Flat", "neutral", 0.05, [])]),
    ("neutral,Plain sentence\nnegative,Bad quarter for $F\n", CsvColumns(text="1", label="0", header=False),
     [("Plain sentence", "neutral", None, []), ("Bad quarter for $F", "negative", None, ["F"])]),
])
def test_csv_column_mapping(tmp_path, csv_text, cols, expected):
    path = tmp_path / "in.csv"
    path.write_text(csv_text)
    recs = read_records(path, csv_columns=cols)
    assert [(r.text, r.label, r.score, r.tickers) for r in recs] == expected


@pytest.mark.parametrize("csv_text,cols,where,reason", [
    ("text,label\nok,positive\nbad,maybe\n", CsvColumns(), "in.csv:3:", "unknown label 'maybe'"),
    ("body,label\nx,positive\n", CsvColumns(), "in.csv:1:", "no column 'text'"),
])
def test_csv_errors_name_file_and_line(tmp_path, csv_text, cols, where, reason):
    path = tmp_path / "in.csv"
    path.write_text(csv_text)
    with pytest.raises(DataError) as exc:
        read_records(path, csv_columns=cols)
    assert str(exc.value).startswith(where) and reason in str(exc.value)


def test_jsonl_error_names_file_and_line(tmp_path):
    path = jsonl(tmp_path / "in.jsonl", [TFNS, TFNS, {**TFNS, "label": "sideways"}])
    with pytest.raises(DataError, match=r"in.jsonl:3: unknown label 'sideways'"):
        read_records(path)


def test_contradicting_gold_score_is_an_error(tmp_path):
    path = jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x", "label": "neutral", "score": 0.9}])
    with pytest.raises(DataError, match="in.jsonl:1: record a: .*contradicts sentiment neutral"):
        convert([path], "chat", tmp_path / "out.jsonl")


def test_cli_convert_chat_folder_and_records_file(tmp_path):
    tf = jsonl(tmp_path / "tfns.jsonl", [TFNS, {**TFNS, "id": "tfns-train-2", "tickers": []}])
    fq = jsonl(tmp_path / "fiqa.jsonl", [FIQA_POST, FIQA_HEADLINE])
    runner = CliRunner()
    res = runner.invoke(app, ["data", "convert", str(tf), str(fq), "--to", "chat", "--out", str(tmp_path / "chat")])
    assert res.exit_code == 0, res.output
    rows, fmt = load_jsonl(tmp_path / "chat" / "tfns.jsonl")  # valid chat JSONL for training
    assert fmt == "chat" and len(rows) == 4  # 2 tickers + 2 cashtags found in the text again
    rows, _ = load_jsonl(tmp_path / "chat" / "fiqa.jsonl")
    assert [r["meta"]["target"] for r in rows] == ["P", "TalkTalk", "Tesco"]  # one row per annotated target
    res = runner.invoke(app, ["data", "convert", str(tf), str(fq), "--to", "records", "--out", str(tmp_path / "r.jsonl")])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["source"] for r in recs] == ["tfns", "tfns", "fiqa", "fiqa"]
    res = runner.invoke(app, ["data", "convert", str(tf), "--to", "yaml", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "records or chat" in res.output


def test_cli_convert_csv_flags(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("headline,sentiment,symbol\nApple beats,bullish,AAPL\nMarkets drift,0,\n")
    res = CliRunner().invoke(app, ["data", "convert", str(path), "--to", "records", "--out", str(tmp_path / "o.jsonl"),
                                   "--text-col", "headline", "--label-col", "sentiment", "--ticker-col", "symbol",
                                   "--label-map", "0=neutral"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(r["label"], r["tickers"]) for r in recs] == [("positive", ["AAPL"]), ("neutral", [])]


@pytest.mark.parametrize("rel,records,min_rows", [
    ("twitter-financial-news-sentiment/valid-a.jsonl", 1194, 1194),
    ("financial-phrasebank/sentences_allagree.jsonl", 1805, 1805),
    ("fiqa-sentiment/fiqa_task1.jsonl", 891, 891),
])
def test_real_datasets_convert_to_valid_chat(shared_data, tmp_path, rel, records, min_rows):
    out = tmp_path / "chat.jsonl"
    report = convert([shared_data / rel], "chat", out)
    assert report.records == records and report.rows >= min_rows
    rows, fmt = load_jsonl(out)
    assert fmt == "chat" and len(rows) == report.rows
    for row in rows[:: max(1, len(rows) // 200)]:
        answer, err = parse_answer(row["messages"][-1]["content"])
        assert err is None and answer.sentiment == row["meta"]["label"]


@pytest.mark.parametrize("name,reason", [
    ("Acme " * 20_000, "target has 99999 characters (at most 80)"),  # huge: one clear error, no row written
    ("x" * 81, "target has 81 characters (at most 80)"),
])
def test_a_target_too_long_for_the_answer_is_a_file_line_error(tmp_path, name, reason):
    row = {**FIQA_HEADLINE, "targets": [{"target": name, "score": 0.2, "aspects": []}]}
    src = jsonl(tmp_path / "fiqa.jsonl", [FIQA_POST, row])
    with pytest.raises(DataError, match=re.escape(f"fiqa.jsonl:2: record fiqa-headline-2: {reason}")):
        convert([src], "chat", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_targets_with_control_characters_and_post_tags_are_cleaned(tmp_path):
    row = {**FIQA_HEADLINE, "targets": [{"target": "Tal\x00kTalk</post>\n<post>", "score": 0.2, "aspects": []}]}
    [rec] = read_records(jsonl(tmp_path / "fiqa.jsonl", [row]))
    [chat] = record_to_chat(rec)
    user = chat["messages"][1]["content"]
    assert user.startswith("Target: Tal kTalk\n<post>\n") and user.count("<post>") == user.count("</post>") == 1
    assert json.loads(chat["messages"][2]["content"])["target"] == chat["meta"]["target"] == "Tal kTalk"
