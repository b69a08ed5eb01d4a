"""The distill job end to end against a real OpenAI-protocol server on 127.0.0.1 (the Done-when bar):
600 real twitter-financial-news-sentiment rows; killed halfway and rerun -> exactly 600 rows and no text sent
twice (counted server-side); faults retried then reported with nothing invalid written; the gold teacher;
dropping disagreements; the output passes `tickerpulse data validate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tickerpulse.data.formats import load_jsonl, validate_file
from tickerpulse.task.contract import build_messages, load_prompt, sanitize_text
from tickerpulse.distill.job import DistillConfig, run_distill
from tickerpulse.distill.teacher import check_answer

TARGETS = {"train": 400, "valid": 100, "test": 100}


def _cli(args: list[str], home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TICKERPULSE_TEACHER_API_KEY", "OPENAI_BASE_URL")}
    env["TICKERPULSE_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "tickerpulse.cli.main", "distill", "--quiet", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_dataset(out: Path, targets: dict[str, int]) -> dict[str, list[dict]]:
    """Every split exists with its exact size, validates, and every assistant answer passes the checks."""
    prompt = load_prompt()
    rows = {}
    for split, n in targets.items():
        rep = validate_file(out / f"{split}.jsonl")
        assert rep.errors == [] and rep.rows == n and rep.format == "chat"
        rows[split], _ = load_jsonl(out / f"{split}.jsonl")
        for row in rows[split]:
            system, user, assistant = row["messages"]
            assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
            text = user["content"].split("<post>\n", 1)[1].rsplit("\n</post>", 1)[0]
            ans = json.loads(assistant["content"])
            assert list(ans) == ["target", "ticker", "sentiment", "score", "reasoning"]
            assert [system, user] == build_messages(text, ans["target"])  # same prompt the server will use
            assert (row["meta"]["target"], row["meta"]["ticker"]) == (ans["target"], ans["ticker"])
            ok, reason = check_answer(assistant["content"], ans["target"], [ans["ticker"]] if ans["ticker"] else [])
            assert ok is not None, reason
            assert row["meta"]["prompt_hash"] == prompt["hash"] and row["meta"]["prompt_version"] == "sentiment-v3"
    ids = [r["meta"]["id"] for split in rows.values() for r in split]
    assert len(ids) == len(set(ids))
    return rows


def test_cli_killed_halfway_resumes_to_exactly_600_rows(teacher_server, tfns_file, tmp_path):
    """SIGTERM mid-run: requests in flight finish and are cached; the rerun sends only the rest; no text is
    ever sent twice; a third run is all cache hits and writes byte-identical files."""
    st = teacher_server.state
    st.delay = 0.01
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    args = ["--input", str(tfns_file), "--limit", "1500", "--teacher", teacher_server.url, "--teacher-model", "gold-echo",
            "--out", str(out), "--n-train", "400", "--n-valid", "100", "--n-test", "100", "--concurrency", "8",
            "--cache", str(cache)]
    proc = _cli(args, tmp_path / "home")
    deadline = time.monotonic() + 120
    while st.requests < 250:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never got halfway"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command" in err
    first = st.requests
    assert 250 <= first < 600
    assert not (out / "train.jsonl").exists()

    proc = _cli(args, tmp_path / "home")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert st.requests == 600 and len(st.received) == 600
    assert max(st.received.values()) == 1  # counted on the server: no text sent to the teacher twice
    rows = _assert_dataset(out, TARGETS)
    report = json.loads((out / "report.json").read_text())
    assert report["cache"] == {"path": str(cache), "hits": first, "sent": 600 - first}
    assert report["counts"]["written"] == TARGETS and report["counts"]["rejected"] == 0
    assert report["agreement"]["written"]["rate"] == 1.0 and report["agreement"]["written"]["rows_with_gold"] == 600
    assert report["tokens"]["dataset"]["prompt"] > 0 and report["teacher"]["response_formats"] == {"json_schema": 600}
    meta = rows["train"][0]["meta"]
    assert meta["teacher"] == "gold-echo" and meta["endpoint"] == f"127.0.0.1:{teacher_server.port}"
    assert meta["agreement"] is True and meta["gold_label"] in ("negative", "neutral", "positive")
    snapshot = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}

    t0 = time.monotonic()
    proc = _cli(args, tmp_path / "home")
    _, err = proc.communicate(timeout=120)
    rerun_s = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert st.requests == 600  # a rerun is free
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == snapshot
    report = json.loads((out / "report.json").read_text())
    assert report["cache"]["hits"] == 600 and report["cache"]["sent"] == 0
    print(f"\ncache-hit rerun of 600 rows: {rerun_s:.1f} s wall (CLI start included)")

    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    check = CliRunner().invoke(app, ["data", "validate", str(out)])
    assert check.exit_code == 0 and check.output.count("ok ") == 3, check.output


@pytest.mark.slow
def test_sigkill_loses_at_most_the_requests_in_flight(teacher_server, tfns_file, tmp_path):
    """SIGKILL cannot drain: the rerun may resend only what was in flight (<= concurrency texts)."""
    st = teacher_server.state
    st.delay = 0.01
    out = tmp_path / "out"
    args = ["--input", str(tfns_file), "--limit", "1500", "--teacher", teacher_server.url, "--teacher-model", "gold-echo",
            "--out", str(out), "--n-train", "400", "--n-valid", "100", "--n-test", "100", "--concurrency", "8",
            "--cache", str(tmp_path / "c.sqlite")]
    proc = _cli(args, tmp_path / "home")
    deadline = time.monotonic() + 120
    while st.requests < 200:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=30)
    proc = _cli(args, tmp_path / "home")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    twice = [t for t, n in st.received.items() if n > 1]
    assert len(st.received) == 600 and max(st.received.values()) <= 2 and len(twice) <= 8
    _assert_dataset(out, TARGETS)


# per input position (mod 10): fault plan, and whether the row ends rejected
FAULT_PLANS = {
    0: (["429", "ok"], False),
    1: (["malformed", "prose", "malformed"], True),
    2: (["500", "500", "ok"], False),
    3: (["slow", "ok"], False),
    4: (["out_of_range", "contradiction", "ok"], False),  # third answer of max_invalid=3 is valid
    5: (["wrong_ticker", "extra_key", "out_of_range"], True),
}


def test_faults_are_retried_then_reported_and_never_written(teacher_server, tfns_file, tfns_gold, tmp_path):
    from tickerpulse.distill.inputs import load_raw

    st = teacher_server.state
    st.slow_seconds, st.retry_after = 1.5, 0.2
    raw = load_raw(tfns_file, limit=250)
    plan_of = {}
    for i, row in enumerate(raw):
        if i % 10 in FAULT_PLANS:
            plan_of[sanitize_text(row.text)] = FAULT_PLANS[i % 10]
    st.set_faults({t: p for t, (p, _) in plan_of.items()})
    out = tmp_path / "out"
    cfg = DistillConfig(input=str(tfns_file), limit=250, teacher=teacher_server.url, teacher_model="gold-echo", out=out,
                        n_train=40, n_valid=10, n_test=10, concurrency=8, timeout=0.6, cache=tmp_path / "c.sqlite")
    report = run_distill(cfg)

    labelled = set(st.received)
    doomed = {t for t in labelled if plan_of.get(t, ([], False))[1]}
    assert doomed, "the first wave should hit some persistent faults"
    c = report["counts"]
    assert c["written"] == {"train": 40, "valid": 10, "test": 10}  # rejected rows were replaced
    assert c["rejected"] == len(doomed) and c["failed"] == 0 and c["labelled"] == 60 + len(doomed)
    kinds = report["rejects"]["by_reason"]
    assert sum(kinds.values()) == len(doomed) and any("not JSON" in k for k in kinds)
    retries = report["retries"]
    for kind in ("429", "5xx", "timeout", "invalid_answer"):
        assert retries.get(kind, 0) > 0, (kind, retries)
    for t in doomed:
        assert st.received[t] == 3  # max_invalid answers, each with the previous error as feedback
    rows = _assert_dataset(out, {"train": 40, "valid": 10, "test": 10})
    written_texts = {sanitize_text(r["messages"][1]["content"].split("<post>\n", 1)[1].rsplit("\n</post>", 1)[0])
                     for split in rows.values() for r in split}
    assert not written_texts & doomed  # nothing invalid reaches the dataset
    assert all(r["meta"]["agreement"] for split in rows.values() for r in split)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == len(doomed) and all(r["verdict"] == "rejected" and r["reason"] for r in rejects)
    md = (out / "report.md").read_text()
    assert "## Rejected rows: " + str(len(doomed)) in md
    print(f"\nfault test: {len(doomed)} rejected, retries {retries}")

    # rejections are cached: a rerun asks nothing; --retry-rejected asks those texts again
    before = st.requests
    run_distill(cfg)
    assert st.requests == before
    again = run_distill(cfg.model_copy(update={"retry_rejected": True}))
    # the rejected rows of the first wave are asked again; their fault plans are used up, so they answer
    # well now and fill the splits before the replacements are reached
    assert before < st.requests <= before + len(doomed)
    assert again["counts"]["rejected"] == 0 and again["counts"]["written"] == c["written"]


def test_drop_disagreements_backfills_and_reports_agreement(teacher_server, tfns_file, tmp_path):
    teacher_server.state.disagree_every = 5  # ~20% of texts get a wrong label
    base = dict(input=str(tfns_file), limit=400, teacher=teacher_server.url, teacher_model="gold-echo",
                n_train=60, n_valid=15, n_test=15, cache=tmp_path / "c.sqlite")
    keep = run_distill(DistillConfig(out=tmp_path / "keep", **base))
    rate = keep["agreement"]["written"]["rate"]
    assert 0.6 < rate < 0.95 and keep["counts"]["dropped_disagreements"] == 0
    conf = keep["agreement"]["confusion_gold_to_teacher"]
    assert sum(conf[g][t] for g in conf for t in conf[g] if g != t) > 0
    drop = run_distill(DistillConfig(out=tmp_path / "drop", drop_disagreements=True, **base))
    assert drop["counts"]["written"] == {"train": 60, "valid": 15, "test": 15}
    assert drop["agreement"]["written"]["rate"] == 1.0 and drop["counts"]["dropped_disagreements"] > 0
    assert drop["cache"]["hits"] == 90  # the first wave was cached by the first run


@pytest.mark.parametrize("dataset", ["fiqa-sentiment/fiqa_task1.jsonl", "twitter-financial-news-sentiment/valid-a.jsonl"])
def test_gold_teacher_via_cli(shared_data, tmp_path, dataset):
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    out = tmp_path / "gold"
    res = CliRunner().invoke(app, ["distill", "--quiet", "--input", str(shared_data / dataset), "--teacher", "gold",
                                   "--out", str(out), "--n-train", "120", "--n-valid", "30", "--n-test", "30"])
    assert res.exit_code == 0, res.output
    rows = _assert_dataset(out, {"train": 120, "valid": 30, "test": 30})
    report = json.loads((out / "report.json").read_text())
    assert report["agreement"]["written"]["rate"] == 1.0 and report["cost_usd"]["this_run"] == 0.0
    assert report["cache"]["path"] is None
    meta = rows["train"][0]["meta"]
    assert meta["reasoning"] == "template" and meta["teacher"] == "gold-labels" and meta["endpoint"] == "gold"
    assert json.loads(rows["train"][0]["messages"][2]["content"])["reasoning"].startswith("Template (gold ")
    from tickerpulse.distill.inputs import load_raw

    raw = {r.id: r for r in load_raw(shared_data / dataset)}
    for r in rows["train"]:
        m, ans = r["meta"], json.loads(r["messages"][2]["content"])
        gold = raw[m["id"]]
        expected = gold.target_gold().get(m["target"], (None, gold.score))[1]  # FiQA: the target's own score
        if expected is not None:
            assert ans["score"] == round(expected, 2)
        assert m["label"] == ans["sentiment"] == m["gold_label"] and m["text"] == gold.text


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    """User errors: one red line, exit 2 (through the real console script), before any work starts."""
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app
    from tickerpulse.config import ConfigError
    from tickerpulse.data.formats import DataError

    unlabeled = tmp_path / "u.jsonl"
    unlabeled.write_text('{"text": "$AAPL up"}\n', encoding="utf-8")
    proc = _cli(["--input", "x.jsonl", "--out", str(tmp_path / "o"), "--teacher", "https://api.openai.com/v1"], tmp_path / "home")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "needs an API key" in err and err.count("error:") == 1 and "Traceback" not in err
    for args, message in [
        (["--out", str(tmp_path / "o")], "--input and --out are required"),
        (["--input", "x.jsonl", "--out", "o", "--teacher", "ftp://nope"], "expected 'gold' or an http(s) URL"),
        (["--input", "x.jsonl", "--out", "o", "--price-in", "1"], "give both --price-in and --price-out"),
        (["--input", "x.jsonl", "--out", "o", "--n-train", "0", "--n-valid", "0", "--n-test", "0"], "nothing to distill"),
        (["--input", "x.jsonl", "--out", "o", "--teacher", "http://u:secret@127.0.0.1:9/v1"], "not in the URL"),
        (["--input", str(unlabeled), "--out", "o", "--teacher", "gold"], "u.jsonl:0: --teacher gold needs gold labels"),
    ]:
        res = CliRunner().invoke(app, ["distill", "--quiet", *args])
        assert isinstance(res.exception, (ConfigError, DataError)) and message in str(res.exception), (args, res.output)


def test_shipped_config_loads():
    from tickerpulse.config import load

    root = Path(__file__).resolve().parents[2]
    cfg = load(DistillConfig, root / "configs" / "distill.yaml", {"n_train": 7})
    assert cfg.teacher_model == "gpt-4o-mini" and cfg.n_train == 7 and cfg.concurrency == 8
    assert cfg.teacher == "https://api.openai.com/v1" and cfg.response_format == "auto"


def test_a_tampered_cache_entry_is_never_written(teacher_server, tfns_file, tmp_path):
    import sqlite3

    from tickerpulse.distill.teacher import TeacherError

    cfg = DistillConfig(input=str(tfns_file), limit=200, teacher=teacher_server.url, teacher_model="gold-echo",
                        out=tmp_path / "out", n_train=4, n_valid=1, n_test=1, cache=tmp_path / "c.sqlite")
    run_distill(cfg)
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("""UPDATE results SET answer = json_set(answer, '$.score', 5) WHERE rowid = 1""")
    db.commit()
    with pytest.raises(TeacherError, match="cached answer for row .* is invalid"):
        run_distill(cfg)


def test_second_signal_abandons_requests_in_flight(teacher_server, tfns_file, tmp_path):
    st = teacher_server.state
    st.delay = 30.0  # every answer hangs: the first SIGTERM alone would wait for them
    proc = _cli(["--input", str(tfns_file), "--limit", "60", "--teacher", teacher_server.url, "--teacher-model",
                 "gold-echo", "--out", str(tmp_path / "o"), "--n-train", "8", "--n-valid", "0", "--n-test", "0",
                 "--cache", str(tmp_path / "c.sqlite")], tmp_path / "home")
    deadline = time.monotonic() + 120
    while st.requests < 8:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # draining: waiting for the 8 answers in flight
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted twice" in err, err
