"""`data split`: deterministic, no duplicate (normalised) text across splits, stratified, self-describing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.data.convert import convert
from tickerpulse.data.split import normalize_text, row_text, split_files, split_rows

LABELS = ("negative", "neutral", "positive")


def make_rows(n: int = 300) -> list[dict]:
    rows = [{"id": f"r{i}", "text": f"Company {i} reports quarter number {i % 7}", "label": LABELS[i % 3]} for i in range(n)]
    # duplicates that only differ by case, URL, punctuation or spacing: must stay together
    rows += [{"id": "d1", "text": "COMPANY 5 reports quarter number 5!!  https://t.co/abc", "label": "positive"},
             {"id": "d2", "text": "company 5 reports, quarter number 5 https://t.co/xyz", "label": "positive"},
             {"id": "d3", "text": "Company 17   reports quarter number 3.", "label": "neutral"}]
    return rows


@pytest.mark.parametrize("a,b", [
    ("Apple beats! https://t.co/x1", "apple   BEATS https://t.co/y2"),
    ("$TSLA up 5%", "$tsla up 5 %"),
    ("Ｆｕｌｌｗｉｄｔｈ text", "fullwidth text"),
])
def test_normalize_text_groups_trivial_variants(a, b):
    assert normalize_text(a) == normalize_text(b)


def test_normalize_keeps_different_numbers_apart():
    assert normalize_text("up 5%") != normalize_text("up 6%")


@pytest.mark.parametrize("row,text", [
    ({"text": "t"}, "t"),
    ({"messages": [{"role": "user", "content": "Ticker: X\n<post>\nthe post\n</post>"}]}, "the post"),
    ({"messages": [{"role": "user", "content": "plain"}], "meta": {"text": "from meta"}}, "from meta"),
    ({"prompt": "p", "completion": "c"}, "p"),
])
def test_row_text(row, text):
    assert row_text(row) == text


def test_no_normalised_text_in_two_splits_and_sizes():
    rows = make_rows()
    parts, res = split_rows(rows, valid=0.1, test=0.1, seed=0)
    seen: dict[str, str] = {}
    for split, items in parts.items():
        for r in items:
            key = normalize_text(row_text(r))
            assert seen.setdefault(key, split) == split, f"{key!r} in {seen[key]} and {split}"
    assert sum(res.rows.values()) == len(rows)
    assert abs(res.rows["test"] - 30) <= 3 and abs(res.rows["valid"] - 30) <= 3
    assert res.duplicate_groups == 2 and res.grouped_rows == 5
    # stratified: every split has every label in about the same share
    for split in ("train", "valid", "test"):
        assert set(res.labels[split]) == set(LABELS)


def test_deterministic_and_seed_dependent(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in make_rows()))
    a = split_files([src], tmp_path / "a", seed=0)
    b = split_files([src], tmp_path / "b", seed=0)
    c = split_files([src], tmp_path / "c", seed=1)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()
    assert a.rows == b.rows and c.rows["test"] > 0
    meta = json.loads((tmp_path / "a" / "split.json").read_text())
    assert meta["seed"] == 0 and meta["inputs"][0]["sha256_16"] and meta["rows"] == a.rows


def test_per_ticker_chat_rows_of_one_text_stay_together(tmp_path):
    src = tmp_path / "tfns.jsonl"
    recs = [{"id": f"tfns-{i}", "text": f"$AAA $BBB - news item {i}", "label": "neutral", "original_label": 2,
             "tickers": ["AAA", "BBB"]} for i in range(40)]
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    convert([src], "chat", tmp_path / "chat.jsonl")
    parts, res = split_rows([json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()], 0.2, 0.2, 3)
    for items in parts.values():
        ids = [r["meta"]["record_id"] for r in items]
        assert all(ids.count(i) == 2 for i in ids)  # both tickers of a record in the same split
    assert res.duplicate_groups == 0  # one record's rows are not "duplicates"


def test_stale_split_file_is_removed(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in make_rows(50)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "valid.jsonl").write_text('{"text": "stale"}\n')
    split_files([src], tmp_path / "out", valid=0.0, test=0.2)
    assert not (tmp_path / "out" / "valid.jsonl").exists()


@pytest.mark.parametrize("valid,test", [(0.5, 0.5), (-0.1, 0.1), (1.0, 0.0)])
def test_bad_fractions(valid, test):
    with pytest.raises(ValueError, match="must be in"):
        split_rows(make_rows(10), valid, test)


def test_cli_split(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in make_rows()))
    res = CliRunner().invoke(app, ["data", "split", str(src), "--out", str(tmp_path / "s"), "--valid", "0.1",
                                   "--test", "0.1", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert "kept together: 5 rows in 2 groups" in " ".join(res.output.split())
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["split.json", "test.jsonl", "train.jsonl", "valid.jsonl"]
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output


def test_cli_split_bad_row(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"text": "a"}\n{"label": "x"}\n')
    res = CliRunner().invoke(app, ["data", "split", str(src), "--out", str(tmp_path / "s")])
    assert isinstance(res.exception, Exception) and "rows.jsonl:2: row has no text" in str(res.exception)
