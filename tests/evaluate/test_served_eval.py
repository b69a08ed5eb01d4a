"""`tickerpulse eval --url` against a real `tickerpulse serve` subprocess (SmolLM2-135M, API key required)
gives the same answers and metrics as `tickerpulse eval --mode fast` in-process on the same items: the
number a user measures is the number the server serves."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from tests.conftest import tickerpulse_serve
from tickerpulse.cli.main import app

N = 6
KEY = "eval-test-key"


@pytest.fixture
def served(smollm2_path, tmp_path):
    args = ["--model", str(smollm2_path), "--timeout", "600"]
    with tickerpulse_serve(args, tmp_path / "serve.log", {**os.environ, "TICKERPULSE_API_KEY": KEY}) as url:
        yield url


@pytest.mark.timeout(900)
def test_eval_url_matches_eval_mode_fast(served, smollm2_path, shared_data, tmp_path, monkeypatch):
    data = shared_data / "fiqa-sentiment" / "fiqa_task1.jsonl"  # gold scores: MAE/Spearman are compared too
    common = ["--data", str(data), "--limit", str(N), "--seed", "5", "--batch-size", "4", "--quiet"]
    monkeypatch.delenv("TICKERPULSE_API_KEY", raising=False)
    res = CliRunner().invoke(app, ["eval", "--url", served, *common, "--out", str(tmp_path / "nokey")])
    assert res.exit_code != 0 and "401" in str(res.exception)  # the key is required and comes from the environment

    monkeypatch.setenv("TICKERPULSE_API_KEY", KEY)
    res = CliRunner().invoke(app, ["eval", "--url", served, *common, "--out", str(tmp_path / "served")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["eval", "--model", str(smollm2_path), "--mode", "fast", *common,
                                   "--out", str(tmp_path / "local")])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "latency" in res.output

    served_ev = json.loads((tmp_path / "served" / "eval.json").read_text())
    local_ev = json.loads((tmp_path / "local" / "eval.json").read_text())
    assert served_ev["config"]["mode"] == local_ev["config"]["mode"] == "fast"
    assert [it["id"] for it in served_ev["items"]] == [it["id"] for it in local_ev["items"]]
    assert [(it["label"], it["score"], it["ticker"]) for it in served_ev["items"]] == \
        [(it["label"], it["score"], it["ticker"]) for it in local_ev["items"]]
    for key in ("n", "accuracy", "macro_f1", "per_class", "confusion", "scores", "schema_valid"):
        assert served_ev["metrics"][key] == local_ev["metrics"][key], key
    for ev in (served_ev, local_ev):
        m = ev["metrics"]
        assert m["n"] == N and m["schema_valid"] == 1.0  # both served modes always answer in the schema
        assert m["latency_p95_s"] > 0 and m["items_per_s"] > 0 and "tokens_per_s" not in m
        assert m["accuracy"] == sum(it["correct"] for it in ev["items"]) / N
