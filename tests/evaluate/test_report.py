"""The comparison report: built from eval results of two systems (answers written by hand and scored by the
real scoring code), rendered in a real headless Chromium: the metric table, the plot images and the
disagreement list are there, and hostile posts/answers are shown as text, never executed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.task.contract import format_answer
from tickerpulse.evaluate.compare import report_from_evals
from tickerpulse.evaluate.items import load_items
from tickerpulse.evaluate.report import comparison_markdown, disagreements, metric_rows, write_html_report
from tickerpulse.evaluate.labelers import Answer, FunctionLabeler, LabelerRun
from tickerpulse.evaluate.result import EvalResult
from tickerpulse.evaluate.runner import run_labeler, score_run, write_eval

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"> $EVIL to the moon'


def _result(name, items, task, answers, info):
    run = LabelerRun([Answer(a, 20 + i % 7, 0.5 + 0.1 * i, "stop") for i, a in enumerate(answers)], wall_s=3.0)
    return score_run(name, items, run, task, data=info, model={"dtype": "torch.float32"},
                     config={"model": "smollm2-135m", "adapter": "runs/x" if name == "tuned" else None, "max_tokens": 64,
                             "temperature": 0.0, "batch_size": 8, "seed": 0})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    rows = [{"id": "p1", "text": "$AAPL beats estimates", "label": "positive", "score": 0.8, "tickers": ["AAPL"]},
            {"id": "p2", "text": HOSTILE, "label": "positive", "score": 0.6, "tickers": ["EVIL"]},
            {"id": "n1", "text": "$BAD misses, cuts guidance", "label": "negative", "score": -0.7, "tickers": ["BAD"]},
            {"id": "z1", "text": "Fed holds rates", "label": "neutral", "score": 0.05, "tickers": []},
            {"id": "z2", "text": "Company to present at conference", "label": "neutral", "score": 0.0, "tickers": []}]
    (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, task, info = load_items(tmp / "d.jsonl")
    base = ["The sentiment is positive!", "<b>positive</b><script>document.title='pwned'</script>",
            format_answer(None, "neutral", 0.1), format_answer(None, "neutral", 0.0), "```json\n{\"sentiment\": \"neutral\"}\n```"]
    tuned = [format_answer("AAPL", "positive", 0.7, "beat"), format_answer("EVIL", "positive", 0.5, "moon"),
             format_answer("BAD", "negative", -0.6, "miss"), format_answer(None, "neutral", 0.0, "flat"),
             format_answer(None, "positive", 0.3, "conference")]
    return [_result("base", items, task, base, info), _result("tuned", items, task, tuned, info)]


def test_metric_rows_and_markdown(results):
    rows = {label: values for label, values, _, _ in metric_rows(results)}
    assert rows["accuracy"] == [pytest.approx(1 / 5), pytest.approx(4 / 5)]
    assert rows["schema-valid"] == [pytest.approx(2 / 5), 1.0]
    assert rows["invalid answers (counted wrong)"] == [3, 0]
    assert rows["score MAE"][0] is not None and "score Spearman" in rows
    md = comparison_markdown(results)
    assert "| accuracy | 20.0% | 80.0% |" in md


def test_disagreements_put_one_sided_items_first(results):
    rows, counts = disagreements(results)
    # base labels: invalid, invalid, neutral, neutral, invalid; tuned: positive, positive, negative, neutral, positive
    assert counts == {"total": 4, "base only right": 0, "tuned only right": 3}
    assert [r["id"] for r in rows[:3]] == ["p1", "p2", "n1"] and rows[3]["id"] == "z2"


@pytest.mark.browser
def test_report_renders_in_headless_chromium(results, tmp_path):
    from tests.browser import images_rendered, open_page

    html = write_html_report(results, tmp_path / "report", title="Base vs tuned (test)")
    for png in ("confusion.png", "per_class.png", "scores.png", "latency.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
    assert (tmp_path / "report" / "report.md").is_file()
    source = html.read_text()
    assert "<script>" not in source and "&lt;script&gt;" in source  # untrusted text is escaped
    with open_page(html, wait_text="Where they disagree") as driver:
        driver.save_screenshot(str(tmp_path / "report.png"))
        text = driver.find_element("tag name", "body").text
        assert driver.title == "Base vs tuned (test)"  # nothing in the posts ran
        table = driver.find_element("id", "metric-table")
        header = [th.text for th in table.find_elements("css selector", "thead th")]
        assert header == ["metric", "base", "tuned", "change"]
        cells = {r.find_elements("tag name", "td")[0].text: [td.text for td in r.find_elements("tag name", "td")[1:]]
                 for r in table.find_elements("css selector", "tbody tr")}
        assert cells["accuracy"] == ["20.0%", "80.0%", "+60.0 pt"]
        assert cells["JSON-valid"][1] == "100.0%"
        sizes = images_rendered(driver)
        assert len(sizes) == 4 and all(w > 300 and h > 200 for w, h in sizes), sizes
        assert '<script>document.title="pwned"</script>' in text  # shown literally, as text
        assert len(driver.find_elements("css selector", "#disagreement-table tbody tr")) == 4
    assert (tmp_path / "report.png").stat().st_size > 20000


def test_report_from_evals_round_trip(results, tmp_path):
    for r in results:
        write_eval(r, tmp_path / r.name)
    html = report_from_evals([tmp_path / "base", tmp_path / "tuned" / "eval.json"], tmp_path / "rep", names=["A", "B"])
    page = html.read_text()
    assert "<th>A</th>" in page and "<th>B</th>" in page and "data:image/png;base64," in page
    other = results[1].model_copy(update={"items": results[1].items[:2]})
    write_eval(other, tmp_path / "short")
    with pytest.raises(ValueError, match="different items"):
        report_from_evals([tmp_path / "base", tmp_path / "short"], tmp_path / "rep2")


def test_html_written_for_text_tasks_without_plots(tmp_path):
    sql = "tickerpulse.evaluate.metrics:sql_exact_match"  # a module path: its dots are not a path into the metrics
    res = EvalResult(name="m", metrics={"task": "text", "n": 1, "text": {"exact": {"mean": 1.0}, sql: {"mean": 0.5}}},
                     items=[{"id": "1", "text": "q", "prediction": "a", "gold": "a", "text_metrics": {"exact": True}}])
    assert {label: values for label, values, _, _ in metric_rows([res])}[sql] == [0.5]
    page = write_html_report([res, res.model_copy(update={"name": "n"})], tmp_path).read_text()
    assert "exact" in page and "confusion.png" not in page and "scores.png" not in page
    assert Path(tmp_path / "report.html").is_file()


def test_label_baseline_beside_generated_systems(results, tmp_path):
    from tickerpulse.evaluate.baselines import majority as majority_class
    from tickerpulse.evaluate.items import EvalItem

    items = [EvalItem(id=it.id, messages=[], text=it.text, gold_label=it.gold_label, gold_score=it.gold_score)
             for it in results[0].items]
    majority = run_labeler(FunctionLabeler("majority", lambda texts: majority_class(["neutral"], texts)), items)
    # gold: positive, positive, negative, neutral, neutral -> 2 of 5 right
    m = majority.sentiment
    assert m.accuracy == pytest.approx(2 / 5)
    # neutral P 2/5 R 1 F1 4/7; positive and negative F1 0 -> macro 4/21
    assert m.macro_f1 == pytest.approx(4 / 21)
    assert m.scores is not None and majority.items[0].score == 0.0
    assert m.json_valid is None and m.tickers is None  # a label-only system has no answer text to parse
    page = write_html_report([*results, majority], tmp_path).read_text()
    assert "<th>majority</th>" in page and "<th>change</th>" not in page
    rows = {label: values for label, values, _, _ in metric_rows([*results, majority])}
    assert rows["JSON-valid"][2] is None and rows["accuracy"][2] == pytest.approx(0.4)
