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


def test_demo_trains_with_the_recipes_fast_setup():
    """configs/demo-sentiment.yaml reuses the recipe's training keys (bf16 base where the CPU has it, shared
    prefix, packing, label-weighted loss, length-grouped batches), not the slow example config."""
    from tickerpulse.config import load_yaml
    from tickerpulse.demo import _configs_dir
    from tickerpulse.train.config import load_train_config

    demo = load_train_config(_configs_dir() / "demo-sentiment.yaml")
    recipe = load_yaml(_configs_dir() / "recipe-sentiment.yaml")["train"]
    for key in ("fine_tune_type", "num_layers", "batch_size", "max_seq_length", "packing", "share_prefix",
                "mask_prompt", "length_group_batches", "learning_rate", "dtype", "early_stopping_metric"):
        assert getattr(demo, key) == recipe[key], key
    assert demo.lora_parameters.rank == recipe["lora_parameters"]["rank"]
    assert [w.model_dump() for w in demo.token_weights] == recipe["token_weights"]
    # long enough to learn the labels, bounded in wall time on a slow or busy CPU
    assert demo.iters >= 150 and demo.time_budget is not None and demo.time_budget <= 600


def test_installed_student_is_found_where_models_path_looks(tmp_path, monkeypatch):
    from tickerpulse.demo import STUDENT, installed_student

    monkeypatch.setenv("TICKERPULSE_HOME", str(tmp_path))
    assert installed_student() is None
    folder = tmp_path / "models" / STUDENT
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert installed_student() == STUDENT
    res = CliRunner().invoke(app, ["models", "path", STUDENT], env={"TICKERPULSE_HOME": str(tmp_path)})
    assert res.exit_code == 0 and STUDENT in res.output  # the same answer as the command the docs name


@pytest.mark.slow
def test_serve_step_shows_the_installed_student_beside_the_demo_model(tmp_path, monkeypatch, smollm2_path):
    """With a `tickerpulse-sentiment` installed (here: the real SmolLM2 weights under that name), the serve
    step runs both servers and shows both models' answers for the same headline."""
    from rich.console import Console

    from tickerpulse.demo import STUDENT, DemoContext, step_serve

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / STUDENT).symlink_to(smollm2_path, target_is_directory=True)
    monkeypatch.setenv("TICKERPULSE_HOME", str(home))
    console = Console(record=True, width=200)
    ctx = DemoContext(out=tmp_path, console=console, limit=1, state={"fuse": {"model": str(smollm2_path)}})
    step_serve(ctx)
    assert ctx.state["serve"]["models"] == ["demo", STUDENT]
    assert {(a["model"], a["mode"]) for a in ctx.state["serve"]["answers"]} == {
        ("demo", "fast"), ("demo", "reasoning"), (STUDENT, "fast"), (STUDENT, "reasoning")}
    text = console.export_text()
    assert f"{STUDENT}: fast" in text and "demo: fast" in text


def test_stream_agreement_compares_the_two_stores_post_by_post(tmp_path):
    """The stream step's comparison of the demo model and tickerpulse-sentiment reads both real stores."""
    from rich.console import Console

    from tests.stream.dashboard.util import make_docs
    from tickerpulse.demo import DemoContext, _stream_agreement
    from tickerpulse.stream.store.duckdb import DuckDBStore

    docs = make_docs(12)
    for name, flip in (("a", set()), ("b", {0, 1, 2})):
        (tmp_path / name).mkdir()
        store = DuckDBStore(tmp_path / name / "store.duckdb")
        changed = [d.model_copy(update={"sentiment": "neutral" if d.sentiment != "neutral" else "positive"}) if i in flip else d
                   for i, d in enumerate(docs)]
        store.upsert(changed[:-1] if name == "b" else changed)  # b misses one post
        store.close()
    console = Console(record=True, width=200)
    got = _stream_agreement(DemoContext(out=tmp_path, console=console), [("demo", tmp_path / "a"), ("other", tmp_path / "b")])
    assert got == {"items": 11, "agree": 8}
    assert "demo vs other on the same stream: 8/11" in console.export_text()
