"""Config merge (defaults < YAML < flags), mlx-lm compatibility, unknown keys rejected by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tickerpulse.config import ConfigError, load_yaml, parse_set_flags
from tickerpulse.train.config import TrainConfig, load_train_config

# The example LoRA config shipped with mlx-lm (keys and values as mlx-lm documents them).
MLX_LM_CONFIG = textwrap.dedent(
    """
    model: "mlx_model"
    train: true
    fine_tune_type: lora
    optimizer: adamw
    data: "/path/to/training/data"
    seed: 0
    num_layers: 16
    batch_size: 4
    iters: 1000
    val_batches: 25
    learning_rate: 1e-5
    steps_per_report: 10
    steps_per_eval: 200
    resume_adapter_file: null
    adapter_path: "adapters"
    save_every: 100
    test: false
    test_batches: 100
    max_seq_length: 2048
    grad_checkpoint: false
    mask_prompt: false
    lr_schedule:
      name: cosine_decay
      warmup: 100
      warmup_init: 1e-7
      arguments: [1e-5, 1000, 1e-7]
    lora_parameters:
      keys: ["self_attn.q_proj", "self_attn.v_proj"]
      rank: 8
      scale: 20.0
      dropout: 0.0
    """
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_mlx_lm_config_parses_unchanged(tmp_path: Path) -> None:
    cfg = load_train_config(write(tmp_path, MLX_LM_CONFIG))
    assert cfg.learning_rate == pytest.approx(1e-5) and isinstance(cfg.learning_rate, float)
    assert cfg.lr_schedule is not None and cfg.lr_schedule.warmup_init == pytest.approx(1e-7)
    assert cfg.lr_schedule.arguments == [1e-5, 1000, 1e-7]
    assert cfg.lora_parameters.keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert cfg.lora_parameters.lora_alpha == pytest.approx(160.0)  # mlx-lm scale 20 * rank 8
    assert cfg.mask_prompt is False and cfg.test_batches == 100
    assert cfg.config and cfg.config.endswith("config.yaml")


def test_yaml_exponent_is_float(tmp_path: Path) -> None:
    assert load_yaml(write(tmp_path, "a: 1e-5\nb: 2E3\nc: .5\nd: '1e-5'\n")) == {"a": 1e-5, "b": 2000.0, "c": 0.5, "d": "1e-5"}


@pytest.mark.parametrize(
    ("yaml_text", "flags", "expect"),
    [
        ("", {}, {"iters": 1000, "batch_size": 4, "mask_prompt": True}),  # defaults
        ("iters: 50\nbatch_size: 2\n", {}, {"iters": 50, "batch_size": 2}),  # YAML over defaults
        ("iters: 50\n", {"iters": 7}, {"iters": 7}),  # flag over YAML
        ("iters: 50\n", {"iters": None}, {"iters": 50}),  # unset flag never overrides
        ("lora_parameters: {rank: 4, dropout: 0.1}\n", {"lora_parameters": {"rank": 16}},
         {"lora_parameters.rank": 16, "lora_parameters.dropout": 0.1}),  # nested merge
        ("fine_tune_type: qlora\n", {}, {"quantize": "4bit", "peft_type": "lora"}),
    ],
)
def test_merge_order(tmp_path: Path, yaml_text: str, flags: dict, expect: dict) -> None:
    cfg = load_train_config(write(tmp_path, yaml_text) if yaml_text else None, flags)
    for key, value in expect.items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value, key


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("learning_rat: 1e-5\n", "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("lora_parameters: {rnk: 4}\n", "unknown key 'lora_parameters.rnk' (did you mean 'rank'?)"),
        ("batch_size: zero\n", "batch_size"),
        ("fine_tune_type: prefix\n", "fine_tune_type"),
        ("num_layers: 0\n", "num_layers"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, yaml_text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_train_config(write(tmp_path, yaml_text))
    assert needle in str(exc.value)
    assert "config.yaml" in str(exc.value)


def test_set_flags() -> None:
    assert parse_set_flags(["lora_parameters.rank=4", "learning_rate=2e-4", "mask_prompt=false"]) == {
        "lora_parameters": {"rank": 4}, "learning_rate": 2e-4, "mask_prompt": False}
    with pytest.raises(ConfigError):
        parse_set_flags(["novalue"])


def test_defaults_roundtrip() -> None:
    cfg = TrainConfig()
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg
