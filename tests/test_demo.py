"""`tickerpulse demo` v1: the base step on one sample headline with a short token cap, through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.demo import STEPS, sample_headlines, select_steps


def test_sample_headlines_are_shipped():
    rows = sample_headlines()
    assert len(rows) >= 5
    assert {r["label"] for r in rows} == {"negative", "neutral", "positive"}
    assert all(set(r) == {"id", "text", "ticker", "label"} for r in rows)


def test_select_steps():
    assert select_steps(None) == STEPS
    with pytest.raises(ValueError, match="unknown demo step.*nope.*steps: base"):
        select_steps(["nope"])


def test_cli_demo_base_step(tmp_path, smollm2_path):
    res = CliRunner().invoke(app, ["demo", "--steps", "base", "--limit", "2", "--max-tokens", "8", "--out", str(tmp_path)],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "sentiment answers for sample headlines" in res.output and "latency" in res.output
    assert "demo done" in res.output
    answers = [json.loads(x) for x in (tmp_path / "base_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2
    for a in answers:
        assert a["raw"] is not None and a["latency_s"] > 0 and a["tokens"] <= 8
        assert (a["parsed"] is None) != (a["error"] is None)  # parsed, or the reason it failed
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["steps"]["base"]["headlines"] == 2


def test_cli_demo_unknown_step(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--steps", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown demo step" in res.output
