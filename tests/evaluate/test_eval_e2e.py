"""End to end with the real SmolLM2-135M: `tickerpulse eval` and `tickerpulse compare` on a few items of the
real twitter data (short max_tokens, so the answers are cut and mostly invalid: what is checked is the
pipeline, the files and the numbers' consistency, and that a rerun gives the same answers)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app

N, MAX_TOKENS = 3, 12


@pytest.fixture(scope="module")
def valid_a(shared_data):
    return shared_data / "twitter-financial-news-sentiment" / "valid-a.jsonl"


def test_eval_cli_writes_eval_json_and_md_and_is_deterministic(valid_a, smollm2_path, tmp_path):
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--model", str(smollm2_path), "--data", str(valid_a), "--limit", str(N),
                                   "--max-tokens", str(MAX_TOKENS), "--batch-size", str(N), "--seed", "3",
                                   "--metric", "contains", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "eval.json" in res.output
    assert f"eval {N}/{N} items" in res.output  # not a terminal: plain progress lines
    ev = json.loads((out / "eval.json").read_text())
    m = ev["metrics"]
    assert m["task"] == "sentiment" and m["n"] == N == len(ev["items"])
    assert ev["data"]["rows"] == 1194 and ev["prompt"]["version"] == "sentiment-v3"  # the default prompt
    # every item counted: confusion cells sum to N, invalid answers included
    assert sum(map(sum, m["confusion"]["matrix"])) == N
    assert m["invalid"] == sum(it["label"] == "invalid" for it in ev["items"])
    assert m["accuracy"] == sum(it["correct"] for it in ev["items"]) / N
    for it in ev["items"]:
        assert 0 < it["n_tokens"] <= MAX_TOKENS and it["latency_s"] > 0 and it["prediction"]
    assert m["tokens_per_s"] > 0 and m["generated_tokens"] == sum(it["n_tokens"] for it in ev["items"])
    assert "| accuracy |" in (out / "eval.md").read_text()

    # the same config again, through the library with the model already loaded: the same answers
    from tickerpulse.config import build
    from tickerpulse.evaluate.runner import EvalConfig, evaluate

    cfg = build(EvalConfig, {**ev["config"], "out": None})
    again = evaluate(cfg, progress=False, write=False)
    assert [it.prediction for it in again.items] == [it["prediction"] for it in ev["items"]]


def test_compare_cli_base_vs_standalone_model_folder(valid_a, smollm2_path, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--base", "smollm2-135m", "--tuned", str(smollm2_path), "--data",
                                   str(valid_a), "--limit", "2", "--max-tokens", "6", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file() and (out / "confusion.png").is_file()
    base = json.loads((out / "base" / "eval.json").read_text())
    tuned = json.loads((out / "tuned" / "eval.json").read_text())
    assert [i["id"] for i in base["items"]] == [i["id"] for i in tuned["items"]]
    # the same weights under two names answer the same
    assert [i["prediction"] for i in base["items"]] == [i["prediction"] for i in tuned["items"]]
    assert "| accuracy |" in res.output

    # one base eval, many tuned runs: --reuse-base takes the saved base answers (same settings and items)
    args = ["compare", "--base", "smollm2-135m", "--tuned", str(smollm2_path), "--data", str(valid_a), "--limit", "2",
            "--quiet", "--reuse-base", str(out / "base")]
    res = CliRunner().invoke(app, [*args, "--max-tokens", "6", "--out", str(tmp_path / "cmp2")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "cmp2" / "base" / "eval.json").read_text())
    assert again["reused_from"] == str(out / "base") and again["items"] == base["items"]
    res = CliRunner().invoke(app, [*args, "--max-tokens", "7", "--out", str(tmp_path / "cmp3")])
    assert res.exit_code != 0 and "max_tokens=6" in str(res.exception)


def test_user_errors_are_one_red_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no label"}\n')
    for args, msg in [(["eval", "--model", "smollm2-135m", "--data", str(tmp_path / "nope.jsonl")], "not found"),
                      (["eval", "--model", "smollm2-135m", "--data", str(bad)], "bad.jsonl:1: a labeled record needs 'label'"),
                      (["eval", "--model", "m", "--data", str(bad), "--metric", "bleu"], "unknown metric 'bleu'"),
                      (["compare", "--out", str(tmp_path)], "--base, --tuned, --data required")]:
        proc = subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        err = " ".join(proc.stderr.split())  # rich wraps long lines at the terminal width
        assert err.startswith("error:") and msg in err, proc.stderr


def test_eval_test_loss_and_perplexity(smollm2_path, tmp_path):
    import math

    from tickerpulse.task.contract import build_messages, format_answer

    rows = [{"messages": [*build_messages(t, k), {"role": "assistant", "content": format_answer(k, lab, s, "")}]}
            for t, k, lab, s in [("$AAPL beats estimates", "AAPL", "positive", 0.7), ("Fed holds rates", None, "neutral", 0.0)]]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["eval", "--model", str(smollm2_path), "--data", str(tmp_path), "--test",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "Test loss" in res.output and "Test ppl" in res.output
    tl = json.loads((tmp_path / "out" / "test_loss.json").read_text())
    assert tl["tokens"] > 20 and tl["samples"] == 2 and 0 < tl["loss"] < 10
    assert tl["ppl"] == pytest.approx(math.exp(tl["loss"]))
