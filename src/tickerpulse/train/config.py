"""The training config: every key of an mlx-lm LoRA `config.yaml` (mlx-lm 0.32's `lora.py`), plus ours.

An mlx-lm config parses unchanged and means the same: a key that is absent takes mlx-lm's `CONFIG_DEFAULTS`
value (`optimizer: adam`, `lora_parameters.scale: 20`, ...); optimizer options (`optimizer_config.<name>`)
default to `mlx.optimizers`' own; `lr_schedule` names the `mlx.optimizers.schedulers` function and passes it
`arguments`. `num_layers` counts blocks from the top (-1 = all), `val_batches`/`test_batches` -1 = the whole
split. Deliberate differences are listed in `MLX_LM_DIFFERENCES`; the run header prints those that apply
(docs/train.md lists them all). Unknown keys are an error naming the key (mlx-lm ignores them silently).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tickerpulse.config import StrictModel, load

OptimizerName = Literal["adam", "adamw", "muon", "sgd", "adafactor"]
# metric trackers `report_to` may name (mlx-lm: wandb, swanlab; ours too: mlflow, tensorboard)
REPORT_TO = ("wandb", "swanlab", "mlflow", "tensorboard")


class LoraParameters(StrictModel):
    """mlx-lm `lora_parameters`."""

    rank: int = Field(8, ge=1, description="LoRA rank r.")
    scale: float | None = Field(None, description="Multiplier on the LoRA update (mlx-lm; default 20 unless alpha "
                                "is given). PEFT alpha = scale * rank.")
    alpha: float | None = Field(None, description="PEFT-style alpha; used when scale is not given.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    keys: list[str] | None = Field(
        None,
        description="Module paths to adapt, mlx-lm style ('self_attn.q_proj') or plain names ('q_proj'); "
        "None or ['all-linear'] = every linear layer of the trained blocks.",
    )

    @property
    def lora_alpha(self) -> float:
        """PEFT's lora_alpha for this config (mlx-lm's default scale 20, i.e. alpha = 20r)."""
        if self.scale is not None:
            return self.scale * self.rank
        if self.alpha is not None:
            return self.alpha
        return MLX_LORA_SCALE * self.rank


MLX_LORA_SCALE = 20.0  # mlx-lm CONFIG_DEFAULTS lora_parameters.scale


# ------------------------------------------------------------------------------------------- optimizers
# One model per optimizer with mlx.optimizers' argument names and defaults, so `optimizer_config.<name>`
# is checked by name (mlx-lm passes it as **kwargs) and means what it means in mlx.


class AdamOptions(StrictModel):
    """mlx.optimizers.Adam."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, ge=0)
    bias_correction: bool | None = Field(
        None, description="mlx's default is off; torch.optim always corrects, so torch takes null/true only.")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must be in [0, 1), got {list(v)}")
        return v


class AdamWOptions(AdamOptions):
    """mlx.optimizers.AdamW: decoupled weight decay, `w -= lr * weight_decay * w`."""

    weight_decay: float = Field(0.01, ge=0)


class SgdOptions(StrictModel):
    """mlx.optimizers.SGD: `weight_decay` is an L2 term added to the gradient."""

    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    dampening: float = Field(0.0, ge=0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov(self) -> "SgdOptions":
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class AdafactorOptions(StrictModel):
    """mlx.optimizers.Adafactor. With `relative_step` (the default) the step size is min(1e-2, 1/sqrt(t)) and
    `learning_rate` / `lr_schedule` are ignored, as in mlx."""

    eps: tuple[float, float] = (1e-30, 1e-3)
    clip_threshold: float = Field(1.0, gt=0)
    decay_rate: float = -0.8
    beta_1: float | None = None
    weight_decay: float = Field(0.0, ge=0)
    scale_parameter: bool = True
    relative_step: bool = True
    warmup_init: bool = False


class MuonOptions(StrictModel):
    """mlx.optimizers.Muon: `weight_decay` is an L2 term added to the gradient."""

    momentum: float = Field(0.95, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    nesterov: bool = True
    ns_steps: int = Field(5, ge=1)


class OptimizerConfig(StrictModel):
    """mlx-lm `optimizer_config`: options per optimizer; only the chosen optimizer's are used."""

    adam: AdamOptions = Field(default_factory=AdamOptions)
    adamw: AdamWOptions = Field(default_factory=AdamWOptions)
    muon: MuonOptions = Field(default_factory=MuonOptions)
    sgd: SgdOptions = Field(default_factory=SgdOptions)
    adafactor: AdafactorOptions = Field(default_factory=AdafactorOptions)


# ---------------------------------------------------------------------------------------------- schedules

ScheduleName = Literal["cosine_decay", "linear_schedule", "exponential_decay", "step_decay", "join_schedules",
                       "constant", "cosine", "linear"]
# mlx.optimizers.schedulers: (required, optional) positional arguments
_SCHEDULE_ARGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cosine_decay": (("init", "decay_steps"), ("end",)),
    "linear_schedule": (("init", "end", "steps"), ()),
    "exponential_decay": (("init", "decay_rate"), ()),
    "step_decay": (("init", "decay_rate", "step_size"), ()),
    "join_schedules": (("schedules", "boundaries"), ()),
}


class LrSchedule(StrictModel):
    """mlx-lm `lr_schedule`: `{name, warmup, warmup_init, arguments}`; `arguments` go to the
    `mlx.optimizers.schedulers` function of that name (see train/schedule.py).

    cosine_decay [init, decay_steps, end=0], linear_schedule [init, end, steps], exponential_decay
    [init, decay_rate], step_decay [init, decay_rate, step_size], join_schedules [[{name, arguments}, ...],
    [boundaries]]. Ours too: `cosine` / `linear` (and cosine_decay / linear_schedule with fewer arguments)
    fill missing ones from the run (init = learning_rate, over the steps after warmup, to 0); `constant` [lr].
    """

    name: ScheduleName = "cosine_decay"
    warmup: int = Field(0, ge=0)
    warmup_init: float = Field(0.0, allow_inf_nan=False)
    arguments: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _arguments(self) -> "LrSchedule":
        check_schedule(self.name, self.arguments, "lr_schedule")
        return self


def check_schedule(name: str, args: list[Any], where: str) -> None:
    """Raise ValueError when `args` cannot be `name`'s arguments (count and types, nested schedules too)."""
    if name in ("cosine", "linear", "constant"):
        if len(args) > (1 if name == "constant" else 0) or not all(_is_number(a) for a in args):
            raise ValueError(f"{where}: {name} takes {'[lr] or ' if name == 'constant' else ''}no arguments "
                             f"(it fills them from the run), got {args}")
        return
    required, optional = _SCHEDULE_ARGS[name]
    if name == "join_schedules":
        if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], list):
            raise ValueError(f"{where}: join_schedules arguments are [[{{name, arguments}}, ...], [boundaries]]")
        schedules, bounds = args
        if not schedules or len(bounds) != len(schedules) - 1:
            raise ValueError(f"{where}: join_schedules needs one boundary fewer than schedules "
                             f"({len(schedules)} schedules, {len(bounds)} boundaries)")
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bounds):
            raise ValueError(f"{where}: join_schedules boundaries must be steps (integers >= 0), got {bounds}")
        for i, sub in enumerate(schedules):
            if not isinstance(sub, dict) or set(sub) - {"name", "arguments"} or "name" not in sub:
                raise ValueError(f"{where}: join_schedules schedule {i} must be {{name, arguments}}, got {sub!r}")
            if sub["name"] not in _SCHEDULE_ARGS or sub["name"] == "join_schedules":
                raise ValueError(f"{where}: join_schedules schedule {i}: unknown schedule {sub['name']!r}; choose "
                                 f"from {', '.join(n for n in _SCHEDULE_ARGS if n != 'join_schedules')}")
            sub_args = sub.get("arguments", [])
            if not isinstance(sub_args, list):
                raise ValueError(f"{where}: join_schedules schedule {i}: arguments must be a list")
            check_schedule(sub["name"], sub_args, f"{where} schedule {i}")
            if len(sub_args) < len(_SCHEDULE_ARGS[sub["name"]][0]):
                raise ValueError(f"{where} schedule {i}: {sub['name']} needs arguments "
                                 f"[{', '.join(_SCHEDULE_ARGS[sub['name']][0])}] inside join_schedules")
        return
    if len(args) > len(required) + len(optional) or not all(_is_number(a) for a in args):
        names = ", ".join([*required, *(f"{o}?" for o in optional)])
        raise ValueError(f"{where}: {name} takes finite numbers [{names}], got {args}")
    fillable = name in ("cosine_decay", "linear_schedule")  # ours: missing arguments come from the run
    if not fillable and len(args) < len(required):
        raise ValueError(f"{where}: {name} needs arguments [{', '.join(required)}], got {args}")
    if name in ("exponential_decay", "step_decay") and args[1] <= 0:
        raise ValueError(f"{where}: {name} decay_rate must be > 0 (a negative rate flips the learning rate's sign), "
                         f"got {args[1]}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_size(value: int | float | str) -> int:
    """mlx-lm's size syntax for `clear_cache_threshold`: bytes, or '500M', '1.5GB' (powers of 10)."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes or e.g. '2GB'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"size must be >= 0, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([MG]B?|)\s*", str(value), re.I)
    if not m:
        raise ValueError(f"expected a size in bytes or e.g. '500M', '2GB', got {value!r}")
    return int(Decimal(m.group(1)) * {"": 1, "M": 10**6, "G": 10**9}[m.group(2)[:1].upper()])


class HfDataset(StrictModel):
    """One mlx-lm `hf_dataset` entry: `datasets.load_dataset(path, split=..., **config)` for each split."""

    path: str = Field(..., min_length=1, description="Hub id, or a local folder / builder name load_dataset reads.")
    train_split: str = Field("train[:80%]", description="Split expression for training (mlx-lm's default).")
    valid_split: str = Field("train[-10%:]", description="Split expression for validation (mlx-lm's default).")
    test_split: str | None = Field(None, description="Split expression for --test (none by default, as in mlx-lm).")
    config: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of load_dataset "
                                   "(name, data_files, revision, ...).")
    prompt_feature: str = "prompt"
    completion_feature: str = "completion"
    chat_feature: str = "messages"
    text_feature: str = "text"
    mask_prompt: bool | None = Field(None, description="Written here by mlx-lm; the top-level mask_prompt decides.")


class TokenWeight(StrictModel):
    """One `token_weights` entry: the trained token right after `after` counts `weight` times in the loss."""

    after: str = Field(..., min_length=1)
    weight: float = Field(..., gt=0)


# The step at which a caller's budget_fit sees the throughput (train.api.train), measured over the steps after
# BUDGET_WARMUP_STEPS: the first steps compile a kernel per new matmul shape and ran at 2/3 of the later speed,
# which made a fit over steps 1-30 reserve ~2 minutes too many for the stages after training.
BUDGET_WARMUP_STEPS = 10
BUDGET_FIT_STEP = 50


class TrainConfig(StrictModel):
    """All settings of one training run. YAML keys and `--flag-names` are the field names."""

    # --- mlx-lm keys -----------------------------------------------------------------------------------
    model: str = Field("smollm2-135m", description="Built-in name, hub id, or local HF folder.")
    train: bool = Field(True, description="Run training (mlx-lm needs --train; we default to it).")
    test: bool = Field(False, description="Evaluate test loss/perplexity after training.")
    data: str = Field("data/", description="Folder with train/valid/test.jsonl, or a hub dataset id.")
    hf_dataset: list[HfDataset] | None = Field(
        None, description="Hugging Face datasets to train on instead of `data`: one mapping or a list of them "
        "(mlx-lm's; concatenated).")
    fine_tune_type: Literal["lora", "dora", "full", "qlora"] = "lora"
    optimizer: OptimizerName = Field("adam", description="adam, adamw, muon, sgd or adafactor (mlx.optimizers).")
    optimizer_config: OptimizerConfig = Field(default_factory=OptimizerConfig,
                                              description="Options per optimizer, mlx.optimizers' names and defaults.")
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
    clear_cache_threshold: int | None = Field(
        None, ge=0, description="Free the accelerator's cached-but-unused memory after a step when it exceeds this "
        "many bytes ('2GB' works too); 0 = after every step. null = the backend's default: mlx 0 (mlx-lm), torch "
        "never (CPU has no allocator cache).")
    trust_remote_code: bool = Field(False, description="Let transformers run a hub model's own Python code.")
    mask_prompt: bool = Field(True, description="Loss on assistant/completion tokens only (mlx-lm default: off).")
    seed: int = 0
    lr_schedule: LrSchedule | None = None
    lora_parameters: LoraParameters = Field(default_factory=LoraParameters)
    test_batches: int = Field(500, description="-1 = whole test set.")
    config: str | None = Field(None, description="Path of the YAML this came from (mlx-lm keeps it too).")
    wandb: str | None = Field(None, description="W&B project name (mlx-lm key); same as report_to=wandb.")
    report_to: str | list[str] | None = Field(None, description="wandb, swanlab, mlflow and/or tensorboard "
                                              "(a comma-separated string or a list).")
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
    compile: bool = Field(
        False, description="torch.compile each transformer block (inductor; fused elementwise ops and casts): "
        "1.22x tokens/s for the recipe's LoRA on a 2-core CPU (docs/train.md). The first steps compile (~40 s "
        "there; kernels are cached on disk for later runs). Needs a C++ compiler on CPU. torch backend (mlx-lm "
        "compiles its step already).")
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping; null disables.")
    weight_decay: float | None = Field(None, ge=0, description="Overrides optimizer_config.<optimizer>.weight_decay "
                                       "(adamw, sgd, muon, adafactor); null = that value (mlx's defaults).")
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

    @field_validator("hf_dataset", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("clear_cache_threshold", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, v: str | list[str] | None) -> str | list[str] | None:
        names = [v] if isinstance(v, str) else list(v or [])
        names = [n.strip().lower() for part in names for n in part.split(",") if n.strip()]
        unknown = [n for n in names if n not in (*REPORT_TO, "none")]
        if unknown:
            raise ValueError(f"unknown tracker {unknown[0]!r}; choose from {', '.join(REPORT_TO)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.weight_decay is not None and self.optimizer == "adam":
            raise ValueError("weight_decay: mlx-lm's adam has no weight decay; use optimizer: adamw (decoupled) or "
                             "sgd (L2)")
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


# Deliberate differences from mlx-lm's defaults, for keys a config leaves out: key -> what mlx-lm does.
# The run header prints the ones whose key the config did not set (docs/train.md explains each).
MLX_LM_DIFFERENCES: dict[str, str] = {
    "train": "train: true (mlx-lm trains only with --train / train: true)",
    "model": "model: smollm2-135m (mlx-lm: Qwen/Qwen3-0.6b)",
    "data": "data: data/ (mlx-lm: mlx-community/WikiSQL from the hub)",
    "mask_prompt": "mask_prompt: true (mlx-lm: false, the loss also trains the prompt)",
    "max_grad_norm": "max_grad_norm: 1.0 (mlx-lm: no gradient clipping)",
    "packing": "packing: true (mlx-lm pads each sample to the batch's longest; same loss, no cross-sample attention)",
}


def mlx_lm_differences(cfg: TrainConfig, backend: str) -> list[str]:
    """The deliberate differences from mlx-lm that apply to this run (keys it left at our default)."""
    out = [text for key, text in MLX_LM_DIFFERENCES.items() if key not in cfg.model_fields_set]
    if backend == "mlx":  # the mlx backend pads like mlx-lm; the torch-only notes do not apply
        out = [t for t in out if not t.startswith("packing")]
    if backend == "torch":
        if cfg.clear_cache_threshold is None:
            out.append("clear_cache_threshold: never on torch (mlx-lm: 0 = free Metal's cache after every step)")
        opt = getattr(cfg.optimizer_config, cfg.optimizer)
        if cfg.optimizer in ("adam", "adamw") and opt.bias_correction is None:
            out.append(f"{cfg.optimizer}: bias-corrected (torch.optim always is; mlx's default bias_correction is "
                       "false)")
    return out


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults < YAML < flags; records the YAML path in `config` as mlx-lm does."""
    over = dict(overrides or {})
    if path:
        over.setdefault("config", str(path))
    return load(TrainConfig, path, over)
