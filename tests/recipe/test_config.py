"""The recipe config is validated whole when it loads: its `train` section is the trainer's TrainConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.config import ConfigError, build, load_yaml, parse_set_flags
from tickerpulse.recipe.config import RecipeConfig, load_recipe_config
from tickerpulse.train.api import resolve_config
from tickerpulse.train.config import TrainConfig

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "recipe-sentiment.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_train_section_loads_as_a_train_config():
    cfg = load_recipe_config(SHIPPED)
    assert isinstance(cfg.train, TrainConfig)
    t = cfg.train
    assert (t.fine_tune_type, t.num_layers, t.lora_parameters.rank, t.batch_size) == ("lora", 16, 64, 16)
    assert t.learning_rate == 1e-3 and isinstance(t.learning_rate, float)  # `1.0e-3` in YAML is a float
    assert [(w.after, w.weight) for w in t.token_weights] == [('"sentiment": "', 8.0)]
    assert t.early_stopping_metric == "weighted_token_loss"


@pytest.mark.parametrize("train_yaml, names", [
    ("  num_layer: 8\n", ["train.num_layer", "did you mean 'num_layers'"]),          # unknown key
    ("  lora_parameters: {rank: 8, alpah: 16}\n", ["train.lora_parameters.alpah"]),  # unknown nested key
    ("  fine_tune_type: prefix\n", ["train.fine_tune_type"]),                        # not one of the choices
    ("  iters: -5\n", ["train.iters"]),                                              # out of range
    ("  early_stopping_metric: weighted_token_loss\n", ["token_weights"]),           # TrainConfig's cross-field check
])
def test_a_bad_train_key_fails_when_the_recipe_config_loads(tmp_path, train_yaml, names):
    path = _write(tmp_path, "seed: 1\ntrain:\n" + train_yaml)
    with pytest.raises(ConfigError) as exc:
        load_recipe_config(path)
    msg = str(exc.value)
    assert str(path) in msg
    for name in names:
        assert name in msg


def test_a_bad_train_flag_fails_at_load_too():
    with pytest.raises(ConfigError, match="train.num_layer"):
        load_recipe_config(SHIPPED, parse_set_flags(["train.num_layer=12"]))


@pytest.mark.parametrize("key, value", [("model", "gemma3-270m"), ("data", "elsewhere"),
                                        ("adapter_path", "runs/x"), ("resume", "runs/x")])
def test_keys_the_recipe_sets_are_refused_under_train(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}: Value error, set by the recipe"):
        load_recipe_config(None, {"train": {key: value}})


def test_flags_merge_into_the_yaml_train_section():
    over = parse_set_flags(["train.num_layers=12", "train.lora_parameters.rank=8"])
    over["train"]["iters"] = 4  # what `--iters 4` adds (cli/recipe.py)
    cfg = load_recipe_config(SHIPPED, over)
    assert (cfg.train.num_layers, cfg.train.iters, cfg.train.lora_parameters.rank) == (12, 4, 8)
    assert cfg.train.lora_parameters.scale == 2.0 and cfg.train.batch_size == 16  # the rest of the YAML stays


def test_train_config_is_what_the_trainer_would_resolve(tmp_path):
    """The run's TrainConfig equals `tickerpulse train` resolving the same keys plus the recipe's three."""
    cfg = load_recipe_config(SHIPPED)
    chat, run = tmp_path / "chat", tmp_path / "run"
    tcfg = cfg.train_config(data=chat, run=run)
    assert (tcfg.model, tcfg.data, tcfg.adapter_path) == (cfg.base_model, str(chat), str(run))
    by_trainer = resolve_config(None, {**load_yaml(SHIPPED)["train"], "model": cfg.base_model, "data": str(chat),
                                       "adapter_path": str(run)})
    assert type(tcfg) is TrainConfig and tcfg.model_dump() == by_trainer.model_dump()
    assert tcfg.model_fields_set == by_trainer.model_fields_set | {"time_budget"}  # only `time_budget: null` differs
    assert cfg.train.model == TrainConfig().model  # the recipe's own section is left as loaded
    tcfg.lora_parameters.rank = 4
    assert cfg.train.lora_parameters.rank == 64  # a copy: the training run cannot change the recipe config


def test_dump_shows_the_train_keys_given_and_loads_back():
    """recipe.json and the card carry the recipe's train choices, not TrainConfig's defaults."""
    cfg = load_recipe_config(SHIPPED)
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert dumped["train"] == load_yaml(SHIPPED)["train"]
    assert "model" not in dumped["train"] and "adapter_path" not in dumped["train"]
    assert build(RecipeConfig, dumped, source="recipe.json") == cfg


def test_no_ablations_field():
    """Measurement history lives in docs/experiments.md, not in the config schema or the card."""
    assert "ablations" not in RecipeConfig.model_fields
    with pytest.raises(ConfigError, match="unknown key 'ablations'"):
        load_recipe_config(None, {"ablations": ["tried something"]})
