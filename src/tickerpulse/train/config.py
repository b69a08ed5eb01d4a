"""The training config: every key of an mlx-lm LoRA `config.yaml`, plus ours.

An mlx-lm config parses unchanged. Semantics follow mlx-lm where it defines them:
`lora_parameters.scale` multiplies the low-rank update (PEFT's `lora_alpha = scale * rank`),
`num_layers` counts blocks from the top (-1 = all), `val_batches`/`test_batches` -1 = the whole split.
Where mlx-lm's default is a known trap we choose differently and say so (`mask_prompt` defaults on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tickerpulse.config import StrictModel, load


class LoraParameters(StrictModel):
    """mlx-lm `lora_parameters`."""

    rank: int = Field(8, ge=1, description="LoRA rank r.")
    scale: float | None = Field(None, description="Multiplier on the LoRA update (mlx-lm). PEFT alpha = scale * rank.")
    alpha: float | None = Field(None, description="PEFT-style alpha; used when scale is not given.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    keys: list[str] | None = Field(
        None,
        description="Module paths to adapt, mlx-lm style ('self_attn.q_proj') or plain names ('q_proj'); "
        "None or ['all-linear'] = every linear layer of the trained blocks.",
    )

    @property
    def lora_alpha(self) -> float:
        """PEFT's lora_alpha for this config (defaults to scale 2.0, i.e. alpha = 2r)."""
        if self.scale is not None:
            return self.scale * self.rank
        if self.alpha is not None:
            return self.alpha
        return 2.0 * self.rank


class LrSchedule(StrictModel):
    """mlx-lm `lr_schedule`: `{name, warmup, warmup_init, arguments}`.

    name: cosine_decay (arguments: [init, decay_steps, end]), linear_schedule (arguments: [init, end, steps]),
    constant; our short names cosine/linear are accepted too.
    """

    name: Literal["cosine_decay", "linear_schedule", "constant", "cosine", "linear"] = "cosine_decay"
    warmup: int = Field(0, ge=0)
    warmup_init: float = 0.0
    arguments: list[float] = Field(default_factory=list)


class TokenWeight(StrictModel):
    """One `token_weights` entry: the trained token right after `after` counts `weight` times in the loss."""

    after: str = Field(..., min_length=1)
    weight: float = Field(..., gt=0)


# The step at which a caller's budget_fit sees the throughput (train.api.train): past warm-up and the
# first kernel compilations, a throughput worth extrapolating.
BUDGET_FIT_STEP = 30


class TrainConfig(StrictModel):
    """All settings of one training run. YAML keys and `--flag-names` are the field names."""

    # --- mlx-lm keys -----------------------------------------------------------------------------------
    model: str = Field("smollm2-135m", description="Built-in name, hub id, or local HF folder.")
    train: bool = Field(True, description="Run training (mlx-lm needs --train; we default to it).")
    test: bool = Field(False, description="Evaluate test loss/perplexity after training.")
    data: str = Field("data/", description="Folder with train/valid/test.jsonl, or a hub dataset id.")
    hf_dataset: dict[str, Any] | list[dict[str, Any]] | None = None
    fine_tune_type: Literal["lora", "dora", "full", "qlora"] = "lora"
    optimizer: Literal["adam", "adamw"] = "adamw"
    optimizer_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_layers: int = Field(16, description="Blocks to fine-tune counted from the top; -1 = all.")
    batch_size: int = Field(4, ge=1)
    iters: int = Field(1000, ge=0)
    val_batches: int = Field(25, description="-1 = whole validation set.")
    learning_rate: float = Field(1e-5, gt=0)
    steps_per_report: int = Field(10, ge=1)
    steps_per_eval: int = Field(200, ge=1)
    save_every: int = Field(100, ge=1)
    adapter_path: str = Field("adapters", description="Run folder: adapters, checkpoints, metrics, plots.")
    resume_adapter_file: str | None = Field(None, description="Start from these adapter weights (mlx-lm).")
    max_seq_length: int = Field(2048, ge=8)
    grad_checkpoint: bool = False
    mask_prompt: bool = Field(True, description="Loss on assistant/completion tokens only (mlx-lm default: off).")
    seed: int = 0
    lr_schedule: LrSchedule | None = None
    lora_parameters: LoraParameters = Field(default_factory=LoraParameters)
    test_batches: int = Field(500, description="-1 = whole test set.")
    config: str | None = Field(None, description="Path of the YAML this came from (mlx-lm keeps it too).")
    wandb: str | None = Field(None, description="W&B project name (mlx-lm key); same as report_to=wandb.")
    report_to: str | list[str] | None = Field(None, description="wandb, mlflow and/or tensorboard.")
    project_name: str | None = None
    grad_accumulation_steps: int = Field(1, ge=1)

    # --- tickerpulse keys ------------------------------------------------------------------------------
    backend: Literal["auto", "torch", "mlx"] = "auto"
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of the frozen base (adapters train in fp32)."
    )
    quantize: Literal["4bit", "8bit"] | None = Field(None, description="QLoRA base quantization (bitsandbytes).")
    packing: bool = Field(True, description="Pack samples into max_seq_length rows, no cross-sample attention.")
    share_prefix: bool = Field(
        True, description="Compute a prompt prefix shared by a batch's samples (e.g. the system prompt) once per "
        "packed row; loss and gradients are unchanged. Needs packing and prompt masking."
    )
    length_group_batches: int = Field(
        0, ge=0, description="Sort each run of N batches by sample length before cutting it into batches (batch "
        "order shuffled): batches of similar lengths pad less. 0 = off. Like HF group_by_length (N = 50 there).")
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping; null disables.")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides lr_schedule.warmup.")
    epochs: float | None = Field(None, gt=0, description="If set, iters = ceil(epochs * steps per epoch).")
    time_budget: float | None = Field(
        None, gt=0, description="Seconds of optimizer steps (validation excluded) after which training ends; "
        "iters/epochs stay the upper bound. The lr schedule follows whichever of steps or time is further along, "
        "so its decay completes on a slow machine too.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Evals without improvement before stopping.")
    early_stopping_min_delta: float = Field(0.0, ge=0)
    early_stopping_metric: Literal["val_loss", "weighted_token_loss"] = Field(
        "val_loss", description="What early stopping and the best adapter follow: the validation loss, or the mean "
        "loss of the token_weights positions alone (e.g. the label token a classifier reads). torch backend.")
    token_weights: list[TokenWeight] = Field(
        default_factory=list, description="Chat data: the answer token right after each `after` text counts `weight` "
        "times in the loss (e.g. the label after '\"sentiment\": \"'); loss = weighted mean. torch backend.")
    resume: str | None = Field(None, description="Run folder to resume exactly (optimizer, schedule, data, RNG).")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.fine_tune_type == "qlora" and self.quantize is None:
            self.__dict__["quantize"] = "4bit"
        if self.num_layers == 0 or self.num_layers < -1:
            raise ValueError("num_layers must be -1 (all) or a positive number of blocks")
        if self.val_batches == 0 or self.val_batches < -1:
            raise ValueError("val_batches must be -1 (all) or positive")
        if self.early_stopping_metric == "weighted_token_loss" and not self.token_weights:
            raise ValueError("early_stopping_metric weighted_token_loss needs token_weights (the positions it scores)")
        return self

    @property
    def peft_type(self) -> Literal["lora", "dora", "full"]:
        return "lora" if self.fine_tune_type == "qlora" else self.fine_tune_type  # type: ignore[return-value]

    @property
    def run_dir(self) -> Path:
        return Path(self.adapter_path)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults < YAML < flags; records the YAML path in `config` as mlx-lm does."""
    over = dict(overrides or {})
    if path:
        over.setdefault("config", str(path))
    return load(TrainConfig, path, over)
