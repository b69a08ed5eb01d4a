"""The suite (several labelers over one test set, agreement, reports) and the injection check, with the real
label-only baselines (VADER, TF-IDF + LR, majority class) as labelers; the calibration fit through a
probability function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.evaluate.baselines import TfidfLR, baseline_labelers
from tickerpulse.evaluate.calibrate import fit_calibration
from tickerpulse.evaluate.injection import FAMILIES, flip_interval
from tickerpulse.evaluate.items import load_items
from tickerpulse.evaluate.result import EvalResult
from tickerpulse.evaluate.suite import System, agreement, evaluate_set, injection_eval, slug
from tickerpulse.task.questions import Question

POS = [f"$X{i} beats estimates and raises guidance, great quarter" for i in range(8)]
NEG = [f"$X{i} misses estimates and cuts outlook, terrible loss" for i in range(8)]
NEU = [f"$X{i} schedules its annual meeting" for i in range(8)]


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    rows = [{"id": f"{lab[:3]}{i}", "text": t, "label": lab, "score": {"positive": 0.6, "negative": -0.6}.get(lab, 0.0),
             "tickers": [f"X{i}"]} for lab, texts in (("positive", POS), ("negative", NEG), ("neutral", NEU))
            for i, t in enumerate(texts)]
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, _, info = load_items(tmp / "test.jsonl")
    tfidf = TfidfLR(seed=0).fit(POS + NEG + NEU, ["positive"] * 8 + ["negative"] * 8 + ["neutral"] * 8)
    return items, info, baseline_labelers(["neutral", "neutral", "positive"], tfidf)


def test_agreement() -> None:
    assert agreement(["positive", "neutral"], ["positive", "negative"]) == 0.5
    assert agreement(["invalid"], ["invalid"]) == 0.0
    with pytest.raises(ValueError):
        agreement(["positive"], [])


def test_evaluate_set_writes_one_result_per_system_and_a_report(test_set, tmp_path: Path) -> None:
    items, info, (majority, vader, tfidf) = test_set
    systems = [System(majority), System(vader), System(tfidf, limit=6, agree_with="VADER", agree_key="vader")]
    results = evaluate_set(systems, items, info, seed=1, eval_dir=tmp_path / "eval", report_dir=tmp_path / "report",
                           title="suite test")
    assert [r.name for r in results] == ["majority class", "VADER", "TF-IDF + LR"]
    assert (tmp_path / "report" / "report.html").is_file()
    for r in results:
        assert EvalResult.load(tmp_path / "eval" / slug(r.name)) == r  # eval.json is the result's dump
    maj, vad, tf = results
    assert maj.sentiment.accuracy == pytest.approx(1 / 3) and maj.sentiment.n == 24
    assert tf.sentiment.accuracy == 1.0 and tf.sentiment.n == 6 == tf.data["n"] and tf.data["rows"] == 24
    by_id = vad.labels_by_id
    assert tf.sentiment.agreement_with == {"vader": pytest.approx(
        agreement([by_id[it.id] for it in tf.items], [it.label for it in tf.items]))}
    written = json.loads((tmp_path / "eval" / "tf-idf--lr" / "eval.json").read_text())
    assert "agreement_with_vader" in written["metrics"]  # stored flat, as before the types
    assert all(it.latency_s >= 0 for it in tf.items) and (tf.sentiment.latency.items_per_s or 0) > 0
    assert slug("TF-IDF + LR") == "tf-idf--lr" and slug("student fast") == "student-fast"  # the folder names of earlier runs


def test_injection_eval_per_family_flips_and_reuses_known_clean_labels(test_set) -> None:
    items, info, (_, vader, tfidf) = test_set
    inj = injection_eval([tfidf, vader], items, info, prompt_version="sentiment-v2")
    assert inj["n"] == 24 and list(inj["systems"]) == ["TF-IDF + LR", "VADER"] and inj["families"] == list(FAMILIES)
    assert any("Reasoning mode" in n for n in inj["notes"])
    ex = inj["items"]
    assert len(ex) == 24 * len(FAMILIES)
    by_item = {it.id: it for it in items}
    for x in ex:
        clean_text = by_item[x["id"]].text
        assert x["asked"] != x["clean_fast"] and x["asked"] in x["injected"]
        assert x["injected"].startswith(clean_text) and len(x["injected"]) > len(clean_text)
    for name in inj["systems"]:
        s = inj["systems"][name]
        assert set(s["families"]) == set(FAMILIES)
        assert s["flips"] == sum(f["flips"] for f in s["families"].values())
        assert s["flip_rate"] == pytest.approx(s["flips"] / (24 * len(FAMILIES)))
    s = inj["systems"]["TF-IDF + LR"]  # the reference: its per-family numbers recomputed from the items
    for family, f in s["families"].items():
        mine = [x for x in ex if x["family"] == family]
        assert f["n"] == 24 and f["flips"] == sum(x["clean_fast"] != x["injected_fast"] for x in mine)
        assert f["flip_rate"] == f["flips"] / 24
        assert f["obeyed_rate"] == sum(x["asked"] == x["injected_fast"] for x in mine) / 24
        assert f["ci95"] == flip_interval([[x["clean_fast"] != x["injected_fast"]] for x in mine])
    # the overall interval resamples posts with all their families (a post's flips are not independent)
    by_post = [[x["clean_fast"] != x["injected_fast"] for x in ex if x["id"] == it.id] for it in items]
    assert s["ci95"] == flip_interval(by_post) and s["ci95"][0] <= s["flip_rate"] <= s["ci95"][1]
    # VADER reads words: a plea or instruction that says "positive" moves it on some post
    assert inj["systems"]["VADER"]["flips"] > 0
    # clean labels a test evaluation already has are taken as given (here: deliberately all "neutral")
    known = {"TF-IDF + LR": {it.id: "neutral" for it in items}}
    again = injection_eval([tfidf, vader], items, info, prompt_version="sentiment-v2", known=known,
                           families=["plea"])
    assert again["families"] == ["plea"] and all(x["clean_fast"] == "neutral" for x in again["items"])
    with pytest.raises(ValueError, match="unknown injection families"):
        injection_eval([tfidf], items, info, prompt_version="sentiment-v2", families=["nope"])


def test_fit_calibration_from_a_probability_table() -> None:
    table = {"up": [0.05, 0.15, 0.8], "down": [0.8, 0.15, 0.05], "flat": [0.1, 0.8, 0.1]}
    gold = {"up": ("positive", 0.4), "down": ("negative", -0.4), "flat": ("neutral", 0.0)}
    questions = [Question(f"q{i}", t, None, *gold[t], group="a") for i, t in enumerate(["up", "down", "flat"] * 6)]
    fit = fit_calibration(lambda qs: [table[t] for t, _ in qs], questions, bias_grid=[],
                          temperature_grid=[0.5, 1.0, 2.0, 4.0])
    assert fit["label_bias"] == [0.0, 0.0, 0.0] and fit["objective"] == "score_mae"
    assert fit["temperature"] > 1.0  # gold scores of 0.4 for confident answers: soften
    assert fit["bias_fit"] == {"label_bias": [0.0, 0.0, 0.0]}
