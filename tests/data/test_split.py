"""`data split`: deterministic, no duplicate (normalised) text across splits, stratified, self-describing."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.data.convert import convert
from tickerpulse.data.split import (
    group_keys,
    normalize_text,
    row_text,
    sample,
    split_files,
    split_groups,
    split_rows,
)

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
    ("$AAPL - Apple beats estimates https://t.co/abc", "$aapl   apple BEATS estimates!! https://t.co/xyz"),
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


# ------------------------------------------------------------------------------------- the one splitter
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
TEXT = st.lists(st.sampled_from(WORDS), min_size=0, max_size=3).map(" ".join)
PUNCT = st.sampled_from(["", "!", " https://t.co/x", "  ", "?!"])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(TEXT, PUNCT, st.sampled_from(["negative", "neutral", "positive", None])), max_size=60),
       fractions=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)), seed=st.integers(0, 5),
       near=st.sampled_from([1.0, 0.5]))
def test_property_no_normalised_text_in_two_splits(rows, fractions, seed, near):
    """Every row in exactly one split, one split per group (normalised text, near-duplicate cluster), same
    answer for the same seed, no rows for a zero fraction, and no wanted split empty when the groups suffice."""
    texts = [t + p for t, p, _ in rows]
    labels = [lab for _, _, lab in rows]
    keys = group_keys(texts, near, seed)
    want = {"test": fractions[0], "valid": fractions[1]}
    parts = split_groups(keys, labels, want, seed)
    assert parts == split_groups(keys, labels, want, seed)
    assert sorted(i for idx in parts.values() for i in idx) == list(range(len(rows)))
    home: dict[str, str] = {}
    for split, idx in parts.items():
        for i in idx:
            assert home.setdefault(keys[i], split) == split
            norm = normalize_text(texts[i])
            if norm:
                assert home.setdefault(f"norm:{norm}", split) == split, f"{norm!r} in two splits"
    assert all(not parts[s] for s, f in want.items() if f == 0)
    wanted = [s for s, f in want.items() if f > 0] + ["train"]
    if len(set(keys)) >= len(wanted):
        assert all(parts[s] for s in wanted), parts


def test_split_groups_by_counts_is_exact_and_stratified():
    labels = ["neutral"] * 600 + ["positive"] * 300 + ["negative"] * 100
    texts = [f"headline {i}" for i in range(1000)]
    parts = split_groups(group_keys(texts), labels, {"valid": 300 / 1000, "test": 0.2}, seed=7)
    assert len(parts["valid"]) == 300 and len(parts["test"]) == 200 and len(parts["train"]) == 500
    for split, n in (("valid", 300), ("test", 200)):
        got = Counter(labels[i] for i in parts[split])
        assert got == {"neutral": 0.6 * n, "positive": 0.3 * n, "negative": 0.1 * n}, (split, got)
    other = split_groups(group_keys(texts), labels, {"valid": 0.3, "test": 0.2}, seed=8)
    assert set(other["test"]) != set(parts["test"])


def test_split_groups_queue_order_is_a_seeded_shuffle():
    """The first n of a split are a random sample of it (distill labels its queues front to back)."""
    labels = ["neutral"] * 50 + ["positive"] * 50
    parts = split_groups(group_keys([f"t {i}" for i in range(100)]), labels, {}, seed=1)
    head = parts["train"][:20]
    assert head != sorted(head) and 5 <= sum(labels[i] == "positive" for i in head) <= 15


def test_sample_keeps_shares_and_groups():
    texts = [f"news {i % 150}" for i in range(300)]  # every text twice
    labels = ["neutral" if i % 150 < 100 else "negative" for i in range(300)]
    keep = sample(group_keys(texts), labels, 100, seed=0)
    assert len(keep) == 100 and keep == sorted(keep) and keep == sample(group_keys(texts), labels, 100, seed=0)
    got = Counter(labels[i] for i in keep)
    assert abs(got["neutral"] - 67) <= 2 and abs(got["negative"] - 33) <= 2, got
    kept = Counter(texts[i] for i in keep)
    assert sum(n != 2 for n in kept.values()) <= 1  # whole groups (the last one may be cut to reach n)
    assert sample(group_keys(texts), labels, None, 0) == list(range(300))


def test_near_duplicates_join_one_group():
    texts = ["Nomura loses confidence in Extended Stay America",
             "$STAY - Nomura loses confidence in Extended Stay America https://t.co/x",
             "Something else entirely"]
    keys = group_keys(texts, near_dup_threshold=0.6)
    assert keys[0] == keys[1] != keys[2]
    assert len(set(group_keys(texts))) == 3
