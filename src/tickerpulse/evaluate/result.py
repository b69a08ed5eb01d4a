"""`EvalResult`: the one result of measuring one labeler on one item set. eval.json is its JSON dump and
loads back into it; the eval/compare HTML reports and the recipe's model card all read this type.

Metrics stay a sparse mapping (`metric("scores.mae")`): which numbers exist depends on the task and the
labeler (a label-only baseline has no JSON-validity rate, a text task no confusion matrix); every number
in it is computed by `runner` from the per-item records next to it, so a report can always recompute it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tickerpulse.config import ConfigError

EVAL_SCHEMA_VERSION = 1


def get_path(m: dict[str, Any] | None, path: str) -> Any:
    """`m["a"]["b"]` for path "a.b", or None when any step is missing or null (metrics are sparse)."""
    node: Any = m
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return node


class EvalResult(BaseModel):
    """One labeler on one item set: what was measured, how, and every item's answer."""

    model_config = ConfigDict(extra="forbid")

    tickerpulse_eval: int = EVAL_SCHEMA_VERSION
    name: str = Field(..., description="The system's name in reports and the card (e.g. 'student fast').")
    config: dict[str, Any] = Field(default_factory=dict, description="The settings it was run with.")
    model: dict[str, Any] = Field(default_factory=dict, description="The labeler: model, mode, dtype, url, load time.")
    data: dict[str, Any] = Field(default_factory=dict, description="path, rows, n, kind, fingerprint of the ids.")
    prompt: dict[str, Any] | None = None
    command: str = ""
    host: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(..., description="task, n, accuracy, macro_f1, per_class, scores, latency...")
    items: list[dict[str, Any]] = Field(..., description="Per item: id, text, gold, prediction, label, score, latency_s.")
    reused_from: str | None = None

    def metric(self, path: str) -> Any:
        """A metric by dotted path ("accuracy", "per_class.negative.recall", "scores.mae"), None when absent."""
        return get_path(self.metrics, path)

    @property
    def labels_by_id(self) -> dict[str, str | None]:
        """Each item's predicted label (`invalid` for an unusable answer), by item id."""
        return {it["id"]: it.get("label") for it in self.items}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, ensure_ascii=False, default=str) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        """Read an eval.json (or the folder holding one).

        Raises:
            FileNotFoundError / ConfigError: missing file or not an eval result.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "eval.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "tickerpulse_eval" not in data:
            raise ConfigError(f"{path} is not a tickerpulse eval.json")
        return cls.model_validate(data)
