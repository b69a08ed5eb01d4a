"""Small and hostile `distill --input` files (issue #26): never an output folder `data validate` rejects.

A small input still fills train/valid/test when it has one distinct text per split; otherwise, or when a
split ends with no accepted row, the job fails with `file:0: reason` and exit 2 (and writes no empty split).
Hostile input files end as `file:line: reason`, exit 2, as in `data convert`.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.task.contract import sanitize_text
from tickerpulse.data.records import Record
from tickerpulse.distill.inputs import load_raw
from tickerpulse.distill.select import plan_splits

from ..data.cli import assert_file_line_errors, run_cli
from ..data.hostile_files import JSONL_FILES, csv_file

WORDS = ("shares", "profit", "guidance", "merger", "lawsuit", "dividend", "recall", "upgrade", "downgrade", "buyback",
         "layoffs", "record", "revenue", "outlook", "tariff", "default", "rally", "slump", "beat", "miss", "chip",
         "oil", "bank", "retail", "airline", "pharma", "approval", "probe", "strike", "forecast")
LABELS = ("positive", "negative", "neutral")


def _raw(path: Path, n: int, distinct: int | None = None) -> Path:
    """n labelled rows with `distinct` different texts (all different by default), far from near-duplicates."""
    rng = random.Random(7)
    texts = [" ".join(rng.sample(WORDS, 8)) + f" {i * 7919}" for i in range(distinct or n)]
    rows = [{"id": f"r{i}", "text": texts[i % len(texts)], "label": LABELS[(i % len(texts)) % 3]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _distill(*args: str | Path, home: Path) -> object:
    return run_cli("distill", "--quiet", "--teacher", "gold", "--cache", home / "cache.sqlite", *args)


def _assert_validates(out: Path, splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, int]:
    res = run_cli("data", "validate", out)
    assert res.code == 0, res.output
    counts = {s: sum(1 for _ in open(out / f"{s}.jsonl")) for s in splits}
    assert all(counts.values()), counts
    return counts


@pytest.mark.parametrize("n", [3, 4, 5, 60])
def test_a_small_input_fills_every_split_and_validates(tmp_path, n):
    """The finding: 60 rows (and fewer) gave an empty test.jsonl that `data validate` rejects."""
    res = _distill("--input", _raw(tmp_path / "raw.jsonl", n), "--out", tmp_path / "out", home=tmp_path)
    assert res.code == 0, res.output
    counts = _assert_validates(tmp_path / "out")
    assert sum(counts.values()) == n
    assert "shortfall" in res.stderr  # 500/100/100 wanted: reported, not hidden


def test_too_few_distinct_texts_is_an_error_naming_the_need(tmp_path):
    src = _raw(tmp_path / "dups.jsonl", 60, distinct=2)
    res = _distill("--input", src, "--out", tmp_path / "out", home=tmp_path)
    assert res.code == 2, res.output
    [error] = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: dups.jsonl:0: too few rows: 60 read, 2 usable after dropping 58 duplicates")
    assert "train/valid/test need at least 3 groups" in error and error.endswith("add rows or set --n-test 0")
    assert not (tmp_path / "out").exists()  # failed before any request or file
    # the way out the message names
    res = _distill("--input", src, "--out", tmp_path / "out", "--n-test", "0", home=tmp_path)
    assert res.code == 0, res.output
    assert _assert_validates(tmp_path / "out", ("train", "valid")) == {"train": 1, "valid": 1}
    assert not (tmp_path / "out" / "test.jsonl").exists()


def test_an_empty_input_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    res = _distill("--input", tmp_path / "empty.jsonl", "--out", tmp_path / "out", home=tmp_path)
    assert res.code == 2 and "\nerror: empty.jsonl:0: no rows to label" in res.stderr, res.output


HOSTILE = {
    "non-utf8.csv": b"text,label\nfine,positive\nhello \xff world,positive\n",
    "long-field.csv": b"text,label\n" + b"a" * 140_000 + b",positive\n",
    "unlabelled-long.csv": b"id,text\n1," + b"a" * 140_000 + b"\n",
    "deep.jsonl": b'{"text": "x", "label": "positive", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "bigint.jsonl": b'{"text": "x", "label": "positive", "score": ' + b"9" * 5000 + b"}\n",
    "nan.jsonl": b'{"text": "x", "label": "positive"}\n{"text": "y", "label": "positive", "score": NaN}\n',
    "unlabelled-bad.jsonl": b'{"text": "x"}\n{"text": "y\xc3"}\n',
    "binary.jsonl": bytes(range(256)) * 3,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_files_are_file_line_errors(tmp_path, name):
    (tmp_path / name).write_bytes(HOSTILE[name])
    res = _distill("--input", tmp_path / name, "--out", tmp_path / "out", home=tmp_path)
    assert res.code == 2, res.output
    assert_file_line_errors(res, {name}, header="distill ")
    assert not (tmp_path / "out").exists()


def test_limit_stops_reading_before_a_later_broken_row(tmp_path):
    src = _raw(tmp_path / "raw.jsonl", 10)
    with open(src, "ab") as fh:
        fh.write(b'{"text": "broken", "label": "positive", "score": NaN}\n')
    assert len(load_raw(src, limit=10)) == 10
    csv_file = tmp_path / "raw.csv"
    csv_file.write_bytes(b"text,label\nup,positive\ndown,negative\n\xff\xfe,neutral\n")
    assert [r.text for r in load_raw(csv_file, limit=2)] == ["up", "down"]


def test_a_split_with_no_accepted_row_is_an_error_and_never_an_empty_file(teacher_server, tfns_file, tmp_path):
    """The real OpenAI-protocol teacher answers prose for the one test text: no empty test.jsonl, exit 2."""
    src = tmp_path / "raw.jsonl"
    with open(tfns_file) as fh:
        src.write_text("".join(next(fh) for _ in range(7)))
    plan = plan_splits(load_raw(src), {"train": 500, "valid": 100, "test": 100})
    test_texts = [plan.rows[i].text for i in plan.queues["test"]]
    teacher_server.state.set_faults({t: ["prose"] * 3 for t in test_texts})
    out = tmp_path / "out"
    res = run_cli("distill", "--quiet", "--input", src, "--out", out, "--teacher", teacher_server.url,
                  "--teacher-model", "gold-echo", "--cache", tmp_path / "c.sqlite")
    assert res.code == 2, res.output
    assert f"\nerror: raw.jsonl:0: no usable row for test ({len(test_texts)} rejected" in res.stderr, res.stderr
    assert not (out / "test.jsonl").exists()
    assert validate_ok(out) and json.loads((out / "report.json").read_text())["counts"]["rejected"] == len(test_texts)
    assert {sanitize_text(json.loads(r)["text"]) for r in (out / "rejects.jsonl").read_text().splitlines()} == \
        {sanitize_text(t) for t in test_texts}


def validate_ok(out: Path) -> bool:
    res = run_cli("data", "validate", out)
    return res.code == 0 and "train.jsonl" in res.stdout and "valid.jsonl" in res.stdout


@settings(max_examples=80, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12),
       targets=st.tuples(st.integers(0, 500), st.integers(0, 100), st.integers(0, 100)).filter(lambda t: sum(t) > 0),
       seed=st.integers(0, 3))
def test_property_every_wanted_split_gets_a_group_when_there_are_enough(sizes, targets, seed):
    """Whole groups of identical text per split, and no wanted split empty when groups >= wanted splits."""
    rows = [Record(id=f"{g}-{k}", text=f"{' '.join(WORDS[g * 2:g * 2 + 3])} {'!' * k}", label="neutral", source="raw")
            for g, size in enumerate(sizes) for k in range(size)]  # rows of a group differ only by punctuation
    want = dict(zip(("train", "valid", "test"), targets, strict=True))
    plan = plan_splits(rows, want, seed=seed)
    wanted = [s for s, n in want.items() if n > 0]
    assert all(not plan.queues[s] for s in want if want[s] == 0)
    if len(sizes) >= len(wanted):
        assert all(plan.queues[s] for s in wanted), (sizes, want, plan.queues)
    assert sorted(i for q in plan.queues.values() for i in q) == list(range(len(plan.rows)))
    where = {i: s for s, q in plan.queues.items() for i in q}
    for c in set(plan.cluster):
        assert len({where[i] for i, ci in enumerate(plan.cluster) if ci == c}) == 1


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=JSONL_FILES)
def test_property_distill_input_never_gives_a_folder_validate_rejects(data):
    """Generated hostile JSONL through `distill --teacher gold`: exit 0 with a folder `data validate` accepts,
    or exit 2 with one `file:line: reason`; never a traceback, never an empty split."""
    with tempfile.TemporaryDirectory(prefix="tp-distill-") as d:
        src, out = Path(d) / "raw.jsonl", Path(d) / "out"
        src.write_bytes(data)
        res = _distill("--input", src, "--out", out, "--near-dup-threshold", "1", home=Path(d))
        assert_file_line_errors(res, {"raw.jsonl"}, header="distill ")
        if res.code == 0:
            check = run_cli("data", "validate", out)
            assert check.code == 0, (check.output, res.output)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(file=csv_file())
def test_property_distill_csv_input(file):
    data, _ = file
    with tempfile.TemporaryDirectory(prefix="tp-distill-") as d:
        src, out = Path(d) / "raw.csv", Path(d) / "out"
        src.write_bytes(data)
        res = _distill("--input", src, "--out", out, home=Path(d))
        assert_file_line_errors(res, {"raw.csv"}, header="distill ")
        if res.code == 0:
            assert run_cli("data", "validate", out).code == 0
