"""`RecipeConfig`: everything the sentiment recipe depends on, merged once (defaults < YAML < flags).

The whole config is validated when it loads, before data and distill run: the `train` section is the
trainer's own `TrainConfig` (every training key and check is `tickerpulse train`'s), so a bad training key
fails at once. The recipe fills `model`, `data` and `adapter_path` of it (`RecipeConfig.train_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializationInfo, ValidationInfo, field_serializer, field_validator, model_validator

from tickerpulse.config import StrictModel, build, load_yaml
from tickerpulse.train.config import TrainConfig

DATASETS = ("tfns", "fpb", "fiqa")  # test sets evaluated per text (evaluate.suite)
ENTITY_DATASET = "finentity"  # news paragraphs, each entity asked about by name; its test is per entity (evaluate.entity)
TRAIN_SETS = (*DATASETS, ENTITY_DATASET)  # where train and valid rows come from
PAIRS = "pairs"  # training rows joined from two single-target twitter rows, asked about each target
CHAT_SOURCES = (*TRAIN_SETS, PAIRS)  # every `source` of a training chat row (what per-dataset settings name)

# TrainConfig keys the recipe sets itself: a value under `train:` would be replaced, so it is refused.
RECIPE_TRAIN_KEYS = {
    "model": "it trains base_model",
    "data": "it trains on its own distilled chat data, <out>/chat",
    "hf_dataset": "it trains on its own distilled chat data, <out>/chat",
    "adapter_path": "the run folder is <out>/run",
    "resume": "every recipe run trains from scratch",
}


def _check_per_dataset(name: str, values: dict[str, Any], known: tuple[str, ...],
                      bounds: tuple[float, float] | None = None) -> None:
    """A per-dataset mapping of the config names only `known` datasets (and, with `bounds`, values inside them)."""
    if unknown := set(values) - set(known):
        raise ValueError(f"{name}: unknown dataset(s) {sorted(unknown)}; known: {list(known)}")
    if bounds and (bad := {k: v for k, v in values.items() if not bounds[0] <= v <= bounds[1]}):
        raise ValueError(f"{name}: each value must be in [{bounds[0]}, {bounds[1]}], got {bad}")


class RecipeTrainConfig(TrainConfig):
    """The recipe's `train:` section: every `tickerpulse train` key and check, except the keys it sets."""

    @field_validator(*RECIPE_TRAIN_KEYS)
    @classmethod
    def _set_by_recipe(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None:
            raise ValueError(f"set by the recipe ({RECIPE_TRAIN_KEYS[str(info.field_name)]})")
        return v


class SplitConfig(StrictModel):
    """How the shared files become train / valid / test (seeded, stratified, duplicate groups kept together)."""

    tfns_valid: int = Field(300, ge=1, description="Rows of twitter train carved out as our own validation set.")
    valid_fraction: float = Field(0.1, gt=0, lt=0.5, description="PhraseBank / FiQA share for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="PhraseBank / FiQA share for the test split.")
    train_limit: dict[str, int | None] = Field(
        default_factory=lambda: {ds: None for ds in TRAIN_SETS},
        description="Stratified subsample of each dataset's train split (null = all); the time budget knob.")
    pairs: int = Field(0, ge=0, description="Training pairs joined from two twitter train rows that each name one "
                       "target (different targets, mostly different labels), each asked about both targets.")
    paragraph_pairs: int = Field(0, ge=0, description="FinEntity train paragraphs joined two by two (no entity in "
                                 "common), each entity of the joined text asked about with its own gold.")
    bystanders: int = Field(0, ge=0, description="Single-target twitter train rows given a clause that names a "
                            "bystander (a data provider, broker, outlet or platform: `recipe.bystanders`), each asked "
                            "about its target (the row's label) and about the bystander (neutral).")
    pair_conflict_share: float = Field(0.7, ge=0, le=1, description="Share of those pairs whose two labels differ.")
    repeat: dict[str, int] = Field(default_factory=dict, description="Train rows of a dataset (or `pairs`) trained "
                                   "this many times, each copy in another place of the shuffled data (absent = 1): "
                                   "weights small datasets against the twitter rows.")
    conflict_repeat: int = Field(1, ge=1, le=8, description="FinEntity train questions from paragraphs whose "
                                 "entities differ in gold label (~190 of ~1,100) trained this many times: the "
                                 "questions where copying the paragraph's mood to every entity is wrong.")
    renamed_copies: int = Field(0, ge=0, le=8, description="Renamed copies of each FinEntity train paragraph "
                                "whose entities differ in gold label (`recipe.renames`: its companies swapped for "
                                "other listed ones, each entity asked with its own gold), added to the train "
                                "questions; unlike `conflict_repeat`'s identical copies, a copy cannot be answered "
                                "from memory of the names.")
    agreeing_questions: int | None = Field(None, ge=1, description="FinEntity train paragraphs that name several "
                                           "entities, all with one label: ask about at most this many of them "
                                           "(a seeded choice; null = every entity). Off: one per paragraph lost "
                                           "conflict accuracy and bought no twitter (docs/experiments.md run M).")
    valid_limit: int | None = Field(None, ge=1, description="Cap on each dataset's validation rows.")
    limit_per_dataset: int | None = Field(None, ge=12, description="Read only this many rows per source file "
                                          "(a seeded stratified sample; tests and quick looks).")

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        _check_per_dataset("train_limit", self.train_limit, TRAIN_SETS)
        _check_per_dataset("repeat", self.repeat, CHAT_SOURCES, bounds=(1, 8))
        return self


class EvalSettings(StrictModel):
    """What is measured after training."""

    batch_size: int = Field(16, ge=1, description="Prompts generated together in free generation.")
    max_tokens: int = Field(48, ge=8, description="Generated tokens per answer (free generation; reasoning text "
                            "tokens in the served reasoning mode).")
    reasoning_limit: int | None = Field(None, ge=1, description="Seeded sample per test set for the served "
                                        "reasoning mode (constrained decoding); null = every item.")
    generation_limit: int | None = Field(200, ge=1, description="Seeded sample per test set for free "
                                         "(unconstrained) generation of the whole answer; null = every item.")
    injection_n: int = Field(100, ge=1, description="Posts with an appended instruction (robustness).")
    base_zero_shot: bool = Field(True, description="Score the base model zero-shot (fast label scoring).")
    base_limit: int | None = Field(None, ge=1, description="Seeded sample per test set for the base model; null = all.")
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="The base model's inference dtype; auto = bf16 on a CPU with native bf16 (twice the "
        "items/s), else fp32.")
    student_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="The fused student's CPU inference dtype, written to its serving.json so that "
        "`serve --model <name>` (dtype auto) runs what the card measured; auto = bf16 on a CPU with native bf16 "
        "(~2x label items/s; 97.8-100% of labels agree with fp32 per validation set, docs/experiments.md), else fp32.")
    injection_free_generation: bool = Field(True, description="Also run free generation on the injection posts.")
    compare_previous: bool = Field(True, description="Measure the model this run replaces (if one is installed "
                                   "under the same name) at entity level before overwriting it: the card's "
                                   "previous student.")
    calibration_grid: list[float] = Field(
        default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0],
        description="Softmax temperatures tried when fitting fast-mode scores on the VALID split.")
    bias_grid: list[float] = Field(
        default_factory=lambda: [x / 4 for x in range(-12, 13)],
        description="Label logit offsets tried for negative and positive when fitting the fast-mode decision "
        "boundary on the VALID split (macro-F1); empty = no bias.")


class RecipeConfig(StrictModel):
    """The default sentiment student, end to end (configs/recipe-sentiment.yaml documents every key)."""

    name: str = Field("tickerpulse-sentiment", description="Installed model name (`--model NAME` finds it).")
    model_dir: Path | None = Field(None, description="Install folder; default <TICKERPULSE_HOME>/models/<name>.")
    base_model: str = Field("smollm2-135m", description="The student's base model.")
    shared_data: Path = Field(Path("../shared/data"), description="Folder holding the four public datasets.")
    out: Path = Field(Path("runs/recipe-sentiment"), description="Work folder: data, run, evals, report.")
    seed: int = 0
    teacher: str = Field("gold", description="'gold' (dataset labels) or an OpenAI-compatible base URL.")
    teacher_model: str = Field("gpt-4o-mini", description="Model name sent to a real teacher.")
    reasoning: Literal["teacher", "empty"] = Field(
        "empty", description="Keep the teacher's reasoning text, or train an empty reasoning string (the gold "
        "teacher's is a template sentence: ~25 tokens per sample that teach nothing).")
    injection_augment: float = Field(0.1, ge=0, le=1, description="Share of training rows added again with an "
                                     "appended instruction (other phrasings than the evaluation's) and the clean label.")
    prompt_version: str = Field("sentiment-v3", description="Prompt file used for training, eval and serving.")
    full_answer_share: dict[str, float] = Field(
        default_factory=lambda: {ds: 1.0 for ds in CHAT_SOURCES},
        description="Per dataset, the share of training rows trained on the whole JSON answer; the others end "
        "after the label (`train_through`): their score is the label's stock value, so the tail teaches only "
        "format the uncut rows teach, and costs ~17 of ~80 computed tokens per sample.")
    soft_label: dict[str, float] = Field(
        default_factory=dict,
        description="Per dataset, the share a of the label token's training target taken from the answer's score "
        "s (only meaningful where s is real: FiQA, or every dataset with a real teacher): target = (1 - a) * "
        "onehot(label) + a * (positive max(s, 0), neutral 1 - |s|, negative max(-s, 0)), so the label "
        "probabilities fast mode turns into its score (p(pos) - p(neg)) follow the gold score, not only its sign.")
    wall_budget: float | None = Field(
        None, gt=0, description="Seconds for the whole recipe: at training step 50 the step-time budget is set so "
        "that training plus the stages after it end by then, from the measured tokens/s (null = train.time_budget "
        "/ iters alone).")
    post_train_tokens: float = Field(
        1_050_000, gt=0, description="What fuse, calibration, evaluation and the injection test cost, in tokens of "
        "training throughput (they take post_train_tokens / tokens-per-second seconds; docs/recipe.md).")
    splits: SplitConfig = Field(default_factory=SplitConfig)
    train: RecipeTrainConfig = Field(default_factory=RecipeTrainConfig, description="`tickerpulse train` keys "
                                     "(docs/train.md) except model, data and adapter_path, which the recipe sets.")
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_serializer("train")
    def _train_as_given(self, v: RecipeTrainConfig, info: SerializationInfo) -> dict[str, Any]:
        """The keys the config gave (what `train:` says), not TrainConfig's ~50 defaults: recipe.json and the
        card show the recipe's choices, and load back into the same config."""
        return v.model_dump(mode=info.mode, exclude_unset=True)

    @field_validator("full_answer_share")
    @classmethod
    def _known_shares(cls, v: dict[str, float]) -> dict[str, float]:
        _check_per_dataset("full_answer_share", v, CHAT_SOURCES, bounds=(0.0, 1.0))
        return {**{ds: 1.0 for ds in CHAT_SOURCES}, **v}

    @field_validator("soft_label")
    @classmethod
    def _known_soft(cls, v: dict[str, float]) -> dict[str, float]:
        _check_per_dataset("soft_label", v, CHAT_SOURCES, bounds=(0.0, 1.0))
        return v

    def train_config(self, data: str | Path, run: str | Path) -> TrainConfig:
        """The training run's config: the `train` section with the recipe's base model, chat data and run folder
        (validated again as a plain TrainConfig, exactly as `tickerpulse train` would build it)."""
        given = self.train.model_dump(exclude_unset=True)
        return TrainConfig.model_validate({**given, "model": self.base_model, "data": str(data), "adapter_path": str(run)})

    @property
    def install_dir(self) -> Path:
        from tickerpulse.models.registry import named_model_dir

        return Path(self.model_dir).expanduser() if self.model_dir else named_model_dir(self.name)


def load_recipe_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """defaults < YAML < overrides (flags); errors name the key and the file."""
    data = load_yaml(path) if path else {}
    return build(RecipeConfig, data, overrides or {}, source=str(path) if path else "flags")
