"""The whole recipe on a tiny slice through the real CLI, then: the card's numbers are the eval outputs'
numbers (recomputed here from eval.json / injection.json, not copied), and the installed folder serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickerpulse.task.metrics import classification_report, score_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_recipe_tiny_slice(shared_data: Path, smollm2_path: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tickerpulse")
    out, model_dir = tmp_path / "work", tmp_path / "model"
    cmd = [str(exe), "recipe", "sentiment", "--shared-data", str(shared_data), "--out", str(out),
           "--model-dir", str(model_dir), "--limit-per-dataset", "36", "--iters", "2", "--generation-limit", "4", "--reasoning-limit", "8",
           "--injection-n", "4", "--set", "train.steps_per_eval=2", "--set", "train.val_batches=1",
           "--set", "eval.base_zero_shot=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1400,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| twitter valid-a accuracy |" in proc.stdout  # the headline table is printed

    card = json.loads((model_dir / "card.json").read_text())
    assert card == json.loads((out / "card.json").read_text())
    md = (model_dir / "README.md").read_text()
    assert md == (model_dir / "MODEL_CARD.md").read_text()
    for ds in ("tfns", "fpb", "fiqa"):
        for sysdir in sorted((out / "eval" / ds).iterdir()):
            ev = json.loads((sysdir / "eval.json").read_text())
            row = card["results"][ds][ev["name"]]
            items = ev["items"]
            gold, pred = [it["gold_label"] for it in items], [it["label"] for it in items]
            rep = classification_report(gold, pred)
            assert row["n"] == len(items)
            assert row["accuracy"] == pytest.approx(rep["accuracy"])
            assert row["macro_f1"] == pytest.approx(rep["macro_f1"])
            assert row["confusion"] == rep["confusion"]
            for lab, rec in row["recall"].items():
                assert rec == pytest.approx(rep["per_class"][lab]["recall"])
            if ds == "fiqa":
                sm = score_metrics([it["gold_score"] for it in items], [it["score"] for it in items])
                assert row["score_mae"] == pytest.approx(sm["mae"])
            acc = f"{100 * row['accuracy']:.1f}%"
            assert f"| {ev['name']} | {row['n']} | {acc} |" in md
    inj = json.loads((out / "injection.json").read_text())
    for name, s in card["injection"]["systems"].items():
        flips = sum(x["clean_fast"] != x["injected_fast"] for x in inj["items"]) if name == "student fast" else s["flips"]
        assert s["flip_rate"] == pytest.approx(flips / (inj["n"] * len(inj["families"])))  # n posts per family
    by_key = {t["key"]: t for t in card["targets"]["student fast"]}
    assert by_key["tfns_accuracy"]["value"] == card["results"]["tfns"]["student fast"]["accuracy"]
    assert by_key["schema_valid"]["value"] == 1.0 and by_key["schema_valid"]["met"]  # fast mode is constrained
    assert card["train"]["tokens_per_sec"] > 0 and card["wall_time_s"] > 0

    # the installed folder is a standalone model with its calibration, and the engine serves it
    assert (model_dir / "config.json").is_file() and (model_dir / "calibration.json").is_file()
    from tickerpulse.serve.engine import SentimentEngine

    engine = SentimentEngine(str(model_dir))
    ans = engine.analyze([("$AAPL beats estimates", "AAPL")], mode="fast")
    assert ans[0]["ticker"] == "AAPL" and ans[0]["sentiment"] in ("negative", "neutral", "positive")
    calib = json.loads((model_dir / "calibration.json").read_text())
    assert engine._calib[None].temperature == calib["temperature"]
    assert list(engine._calib[None].label_bias) == calib["label_bias"]
    # ... in the dtype it was evaluated in: serving.json declares it, `dtype: auto` loads it, the card says it
    from tickerpulse.models.loading import cpu_supports_bf16, declared_cpu_dtype

    declared = declared_cpu_dtype(model_dir)
    assert declared == ("bfloat16" if cpu_supports_bf16() else "float32") == card["student_dtype"]
    assert str(engine.rt.dtype) == f"torch.{declared}"
    for f in out.glob("eval/*/student-*/eval.json"):
        assert json.loads(f.read_text())["config"]["dtype"] == declared, f

    # --evaluate-only reruns calibration, evaluation and the card on the same work folder and student: the
    # fast-mode numbers come out identical (the engine's answers do not depend on batching), the train steps'
    # timings are kept
    proc = subprocess.run([*cmd, "--evaluate-only"], cwd=ROOT, capture_output=True, text=True, timeout=1400,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = json.loads((model_dir / "card.json").read_text())
    for ds in ("tfns", "fpb", "fiqa"):
        for key in ("accuracy", "macro_f1", "score_mae"):
            assert again["results"][ds]["student fast"][key] == card["results"][ds]["student fast"][key], (ds, key)
    assert again["timings_s"]["train"] == card["timings_s"]["train"] and again["train"] == card["train"]
