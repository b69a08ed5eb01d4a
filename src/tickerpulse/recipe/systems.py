"""Turning each system's predictions into eval results (the eval.json shape) on one test set.

LLM systems go through `evaluate.runner.score_answers` (answer texts -> JSON/schema rates, labels, scores,
tickers); label-only baselines through `runner.label_result`. Either way every number later shown in the
card is read back from these results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.runner import EVAL_SCHEMA_VERSION, GenerationRun, latency_metrics, score_answers


def answers_result(name: str, items: list[EvalItem], texts: list[str], data_info: dict[str, Any],
                   config: dict[str, Any], run: GenerationRun | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An eval result for answer texts (fast-mode dicts dumped as JSON, or generated text)."""
    metrics, per_item = score_answers(items, texts, "sentiment")
    if run is not None:
        metrics.update(latency_metrics(run))
    if extra:
        metrics.update(extra)
    records = [{"id": it.id, "text": it.text, "gold_label": it.gold_label, "gold_score": it.gold_score,
                "gold_tickers": it.gold_tickers, **rec} for it, rec in zip(items, per_item)]
    if run is not None:
        for rec, a in zip(records, run.answers):
            rec.update({"n_tokens": a.n_tokens, "latency_s": round(a.latency, 4), "finish_reason": a.finish_reason})
    return {"tickerpulse_eval": EVAL_SCHEMA_VERSION, "name": name, "config": config, "data": data_info,
            "metrics": metrics, "items": records}


def agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of items whose two labels are equal (an invalid answer never agrees)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} labels")
    return sum(x == y and x != "invalid" for x, y in zip(a, b)) / len(a) if a else 0.0


def dump_answer(ans: dict[str, Any]) -> str:
    return json.dumps(ans, ensure_ascii=False)
