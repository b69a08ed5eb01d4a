"""`EvalResult`: the one result of measuring one labeler on one item set. eval.json is its JSON dump and
loads back into it; the eval/compare HTML reports, `tickerpulse eval`'s summary and the recipe's model card
all read this type by attribute.

Its metrics are typed by task (`SentimentMetrics` or `TextMetrics`, told apart by `task`) and its items are
`ItemRecord`s. Which numbers exist depends on the labeler (a label-only baseline has no JSON-validity
rate, a served mode no generated tokens): such a number is None and is left out of eval.json rather than
written as null, so eval.json keeps the flat layout it has always had and earlier files load unchanged.
Every number is computed by `runner` from the item records next to it, so a report can always recompute it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      model_serializer, model_validator)

from tickerpulse.config import ConfigError

EVAL_SCHEMA_VERSION = 1

Number = bool | int | float  # a text metric's per-item value (bool/int kept as given, so eval.json is unchanged)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Given(_Part):
    """Dumps only the fields it was given (eval.json omits a number a labeler does not have)."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


# ------------------------------------------------------------------------------------------- metric parts
class ClassMetrics(_Part):
    """One class of a classification report (`task.metrics.per_class`)."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


class Confusion(_Part):
    """Counts with gold classes as rows and predicted classes + "invalid" as columns."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


class ScoreMetrics(_Part):
    """Score agreement over the items with a gold score; an invalid answer's score is imputed as 0.0."""

    n: int
    n_imputed: int
    mae: float
    pearson: float | None
    spearman: float | None


class TickerMetrics(_Part):
    """Micro precision/recall/F1 of the answered ticker against each item's gold tickers."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


class Latency(_Given):
    """Per-item latency (seconds, batch start to batch end) and throughput of one run. The token numbers
    exist only when the labeler generated text; all are None for a result built without a run."""

    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    generated_tokens: int | None = None
    mean_answer_tokens: float | None = None
    hit_max_tokens: int | None = None
    tokens_per_s: float | None = None
    items_per_s: float | None = None
    wall_s: float | None = None
    peak_memory_mb: float | None = None


# Text metrics by spec: the mean of each value (`regex` also keeps its `pattern`).
TextScores = dict[str, dict[str, float | str]]
_AGREE = "agreement_with_"


class _RunMetrics(_Given):
    """What every result has besides its task's numbers: the run's latency and, for a system compared with
    an earlier one (`suite.System.agree_with`), its label agreement by that system's key ("fast").

    eval.json stores both flat after the task's numbers (`latency_mean_s`, `agreement_with_fast`).
    """

    latency: Latency = Field(default_factory=Latency)
    agreement_with: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "latency" in data:
            return data
        flat = {k: v for k, v in data.items() if k not in Latency.model_fields and not k.startswith(_AGREE)}
        latency = {k: v for k, v in data.items() if k in Latency.model_fields}
        agree = {k[len(_AGREE):]: v for k, v in data.items() if k.startswith(_AGREE)}
        return {**flat, **({"latency": latency} if latency else {}), **({"agreement_with": agree} if agree else {})}

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        full = handler(self)
        latency, agree = full.pop("latency"), full.pop("agreement_with")
        given = {k: v for k, v in full.items() if k in self.model_fields_set or k == "task"}
        return {**given, **latency, **{_AGREE + k: v for k, v in agree.items()}}


class SentimentMetrics(_RunMetrics):
    """Every number of one system on a sentiment item set (`evaluate.metrics.sentiment_metrics`, or
    `runner.label_metrics` for a label-only system, which has no JSON/schema rates and no lenient label).

    An answer that is not schema-valid gets the label "invalid": wrong for accuracy, its own confusion column.
    """

    task: Literal["sentiment"] = "sentiment"
    n: int
    json_valid: float | None = Field(None, description="Share of answers that are one JSON object, nothing around.")
    json_found: float | None = Field(None, description="Share with an extractable JSON object (prose around allowed).")
    schema_valid: float | None = Field(None, description="Share that pass the answer schema (only these get a label).")
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]
    invalid: int = Field(..., description="Answers without a usable label (counted wrong).")
    confusion: Confusion
    accuracy_lenient: float | None = Field(None, description="Accuracy of the `sentiment` field of any JSON found.")
    macro_f1_lenient: float | None = None
    scores: ScoreMetrics | None = Field(None, description="None when no item has a gold score.")
    tickers: TickerMetrics | None = Field(None, description="None when no item has gold tickers nor an answered one.")
    text: TextScores | None = None


class TextMetrics(_RunMetrics):
    """A generic text task (reference answers): the `text` metrics and the item count."""

    task: Literal["text"] = "text"
    text: TextScores | None = None
    n: int


Metrics = Annotated[SentimentMetrics | TextMetrics, Field(discriminator="task")]


# ------------------------------------------------------------------------------------------------- items
class ItemRecord(_Given):
    """One item's answer and how it scored. The parse fields exist for a generated sentiment answer, `label`
    / `score` / `correct` for any sentiment answer, `text_metrics` when text metrics were asked for."""

    id: str
    text: str = Field("", description="What a human reads: the post, or the last user message.")
    gold: str | None = Field(None, description="The reference answer (chat/completions rows).")
    gold_label: str | None = None
    gold_score: float | None = None
    gold_tickers: list[str] | None = None
    prediction: str = Field("", description="The answer text (a label-only system: its label).")
    json_valid: bool | None = None
    json_found: bool | None = None
    schema_valid: bool | None = None
    label: str | None = Field(None, description='The sentiment label, "invalid" for an unusable answer.')
    label_lenient: str | None = None
    score: float | None = None
    ticker: str | None = None
    error: str | None = Field(None, description="Why the answer is not schema-valid.")
    correct: bool | None = None
    text_metrics: dict[str, Number | dict[str, Number]] | None = None
    n_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None


# ------------------------------------------------------------------------------------------------ result
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
    metrics: Metrics
    items: list[ItemRecord]
    reused_from: str | None = None

    @property
    def sentiment(self) -> SentimentMetrics:
        """The metrics of a sentiment result (what the suite and the card read).

        Raises:
            TypeError: a text-task result.
        """
        if not isinstance(self.metrics, SentimentMetrics):
            raise TypeError(f"{self.name} measured a {self.metrics.task} task, not sentiment")
        return self.metrics

    @property
    def labels_by_id(self) -> dict[str, str | None]:
        """Each item's predicted label (`invalid` for an unusable answer), by item id."""
        return {it.id: it.label for it in self.items}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, ensure_ascii=False, default=str) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        """Read an eval.json (or the folder holding one).

        Raises:
            FileNotFoundError / ConfigError: missing file, or not an eval result (naming the first bad field).
        """
        path = Path(path)
        if path.is_dir():
            path = path / "eval.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "tickerpulse_eval" not in data:
            raise ConfigError(f"{path} is not a tickerpulse eval.json")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ConfigError(f"{path} is not a valid tickerpulse eval.json: {where}: {first['msg']}{more}") from None
