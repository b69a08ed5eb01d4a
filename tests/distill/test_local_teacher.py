"""A local model as the teacher, through the project's own OpenAI-compatible server (`tickerpulse serve`
with SmolLM2-135M, started here on a free 127.0.0.1 port). Slow: every answer is generated on the CPU."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import tickerpulse_serve
from tickerpulse.data.formats import load_jsonl
from tickerpulse.distill.job import DistillConfig, run_distill
from tickerpulse.distill.teacher import check_answer


@pytest.fixture
def serve_url(smollm2_path, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}  # no key: open loopback server
    with tickerpulse_serve(["--model", "smollm2-135m", "--timeout", "1200"], tmp_path / "serve.log", env) as url:
        yield url + "/v1"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~12 CPU generations: a few minutes on an idle machine, far more on a busy one
def test_distill_through_tickerpulse_serve(serve_url, shared_data, tmp_path):
    out = tmp_path / "out"
    cfg = DistillConfig(input=str(shared_data / "twitter-financial-news-sentiment" / "valid-a.jsonl"), limit=6,
                        teacher=serve_url, teacher_model="smollm2-135m", out=out, n_train=2, n_valid=1, n_test=1,
                        concurrency=2, timeout=1200, max_invalid=2, max_tokens=120, max_consecutive_failures=100,
                        cache=tmp_path / "c.sqlite")
    report = run_distill(cfg)
    c = report["counts"]
    # a 135M model is a poor teacher: whatever it gets wrong is rejected with a reason, never written
    assert c["failed"] == 0 and c["labelled"] == c["ok"] + c["rejected"]
    assert sum(c["written"].values()) + sum(c.get("shortfall", {}).values()) == 4
    assert report["teacher"]["format_fallbacks"] == []  # our server enforces json_schema instead of refusing it
    assert all(fmt == "json_schema" for fmt in report["teacher"]["response_formats"])
    assert report["tokens"]["this_run"]["completion"] > 0
    for split in c["written"]:
        rows, _ = load_jsonl(out / f"{split}.jsonl") if (out / f"{split}.jsonl").stat().st_size else ([], None)
        for row in rows:
            ans = json.loads(row["messages"][-1]["content"])
            assert list(ans)[:2] == ["target", "ticker"] and (row["meta"]["target"], row["meta"]["ticker"]) == (ans["target"], ans["ticker"])
            assert check_answer(row["messages"][-1]["content"], ans["target"], [ans["ticker"]] if ans["ticker"] else [])[0]
            assert row["meta"]["teacher"] == "smollm2-135m" and row["meta"]["reasoning"] == "teacher"
    for reason in report["rejects"]["by_reason"]:
        assert reason  # e.g. "schema: answer: Value error, score # contradicts sentiment negative ..."
    print("\nlocal teacher:", c, report["rejects"]["by_reason"], report["timing"])
