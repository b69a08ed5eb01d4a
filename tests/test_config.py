"""Config merge (defaults < YAML < flags), mlx-lm compatibility, unknown keys rejected by name."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.config import ConfigError, load_yaml, parse_set_flags
from tickerpulse.train.config import TrainConfig, load_train_config

# mlx-lm's examples/lora_config.yaml (mlx-lm 0.32), every key, the commented-out ones switched on.
MLX_LM_CONFIG = textwrap.dedent(
    """
    model: "mlx-community/Llama-3.2-1B-Instruct-bf16"
    train: true
    fine_tune_type: lora
    optimizer: adamw
    optimizer_config:
      adamw:
        betas: [0.9, 0.98]
        eps: 1e-6
        weight_decay: 0.05
        bias_correction: true
    data: "mlx-community/WikiSQL"
    seed: 0
    num_layers: 16
    batch_size: 4
    iters: 1000
    val_batches: 25
    learning_rate: 1e-5
    report_to: wandb,swanlab
    project_name: "Your-awesome-mlx-project-name"
    steps_per_report: 10
    steps_per_eval: 200
    grad_accumulation_steps: 1
    resume_adapter_file: null
    adapter_path: "adapters"
    save_every: 100
    test: false
    test_batches: 100
    max_seq_length: 2048
    grad_checkpoint: false
    lora_parameters:
      keys: ["self_attn.q_proj", "self_attn.v_proj"]
      rank: 8
      scale: 20.0
      dropout: 0.0
    lr_schedule:
      name: cosine_decay
      warmup: 100 # 0 for no warmup
      warmup_init: 1e-7 # 0 if not specified
      arguments: [1e-5, 1000, 1e-7] # passed to scheduler
    hf_dataset:
      path: "billsum"
      train_split: "train[:1000]"
      valid_split: "train[-100:]"
      prompt_feature: "text"
      completion_feature: "summary"
    """
)
# keys of mlx-lm's CONFIG_DEFAULTS the example leaves out, and keys mlx-lm's CLI adds
MLX_LM_EXTRA = "mask_prompt: false\nclear_cache_threshold: 0\ntrust_remote_code: false\nconfig: null\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_mlx_lm_config_parses_unchanged(tmp_path: Path) -> None:
    cfg = load_train_config(write(tmp_path, MLX_LM_CONFIG + MLX_LM_EXTRA))
    assert cfg.learning_rate == pytest.approx(1e-5) and isinstance(cfg.learning_rate, float)
    assert cfg.lr_schedule is not None and cfg.lr_schedule.warmup_init == pytest.approx(1e-7)
    assert cfg.lr_schedule.arguments == [1e-5, 1000, 1e-7]
    assert cfg.lora_parameters.keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert cfg.lora_parameters.lora_alpha == pytest.approx(160.0)  # mlx-lm scale 20 * rank 8
    assert cfg.mask_prompt is False and cfg.test_batches == 100
    assert cfg.config and cfg.config.endswith("config.yaml")
    adamw = cfg.optimizer_config.adamw
    assert cfg.optimizer == "adamw" and adamw.betas == (0.9, 0.98) and adamw.eps == pytest.approx(1e-6)
    assert adamw.weight_decay == pytest.approx(0.05) and adamw.bias_correction is True
    assert cfg.report_to == "wandb,swanlab" and cfg.project_name == "Your-awesome-mlx-project-name"
    assert cfg.clear_cache_threshold == 0 and cfg.trust_remote_code is False
    assert cfg.hf_dataset is not None and len(cfg.hf_dataset) == 1  # one mapping or a list, as in mlx-lm
    hf = cfg.hf_dataset[0]
    assert (hf.path, hf.train_split, hf.valid_split, hf.prompt_feature, hf.completion_feature) == (
        "billsum", "train[:1000]", "train[-100:]", "text", "summary")


def test_every_mlx_lm_key_exists_and_defaults_match_but_the_documented_differences() -> None:
    """mlx-lm's CONFIG_DEFAULTS is the reference: same keys; same values except MLX_LM_DIFFERENCES."""
    lora = pytest.importorskip("mlx_lm.lora", reason="mlx-lm (the reference) is not installed")
    from tickerpulse.train.config import MLX_LM_DIFFERENCES

    ours = TrainConfig()
    assert set(lora.CONFIG_DEFAULTS) <= set(TrainConfig.model_fields)
    differ = set(MLX_LM_DIFFERENCES) | {"clear_cache_threshold"}  # null = the backend's default (mlx: 0)
    for key, ref in lora.CONFIG_DEFAULTS.items():
        if key in differ:
            continue
        value = getattr(ours, key)
        if key == "lora_parameters":
            assert (value.rank, value.dropout, value.lora_alpha / value.rank, value.keys) == (
                ref["rank"], ref["dropout"], ref["scale"], None)
        elif key == "optimizer_config":
            assert set(ref) == set(type(value).model_fields)
        else:
            assert value == ref, key
    # every mlx-lm CLI flag's option is a key too (argparse dests)
    dests = {a.dest for a in lora.build_parser()._actions if a.dest != "help"}
    assert dests <= set(TrainConfig.model_fields)


@pytest.mark.parametrize(("name", "options", "check"), [
    ("adam", {"betas": [0.8, 0.99], "eps": 1e-7}, lambda o: o.betas == (0.8, 0.99)),
    ("adamw", {"weight_decay": 0.1}, lambda o: o.weight_decay == 0.1),
    ("sgd", {"momentum": 0.9, "weight_decay": 1e-4, "dampening": 0.0, "nesterov": True}, lambda o: o.nesterov),
    ("adafactor", {"eps": [1e-30, 1e-3], "clip_threshold": 1.0, "decay_rate": -0.8, "weight_decay": 0.0,
                   "scale_parameter": True, "relative_step": False, "warmup_init": False},
     lambda o: o.relative_step is False),
    ("muon", {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False, "ns_steps": 3}, lambda o: o.ns_steps == 3),
])
def test_every_optimizer_and_its_mlx_options_parse(tmp_path: Path, name: str, options: dict, check) -> None:
    import yaml

    text = yaml.safe_dump({"optimizer": name, "optimizer_config": {name: options}})
    cfg = load_train_config(write(tmp_path, text))
    assert cfg.optimizer == name and check(getattr(cfg.optimizer_config, name))


@pytest.mark.parametrize("sched", [
    "{name: cosine_decay, warmup: 10, warmup_init: 1e-7, arguments: [1e-5, 100]}",
    "{name: linear_schedule, arguments: [1e-4, 1e-6, 100]}",
    "{name: exponential_decay, arguments: [1e-4, 0.99]}",
    "{name: step_decay, warmup: 5, arguments: [1e-4, 0.5, 20]}",
    "{name: join_schedules, arguments: [[{name: linear_schedule, arguments: [0, 1e-4, 10]}, "
    "{name: cosine_decay, arguments: [1e-4, 90]}], [10]]}",
])
def test_every_mlx_schedule_parses(tmp_path: Path, sched: str) -> None:
    cfg = load_train_config(write(tmp_path, f"lr_schedule: {sched}\n"))
    assert cfg.lr_schedule is not None


@pytest.mark.parametrize(("text", "value"), [
    ("clear_cache_threshold: 0\n", 0), ("clear_cache_threshold: 2GB\n", 2 * 10**9),
    ("clear_cache_threshold: 500M\n", 5 * 10**8), ("clear_cache_threshold: 1.5G\n", 1_500_000_000),
    ("clear_cache_threshold: 1024\n", 1024),
])
def test_clear_cache_threshold_takes_mlx_lm_sizes(tmp_path: Path, text: str, value: int) -> None:
    assert load_train_config(write(tmp_path, text)).clear_cache_threshold == value


@pytest.mark.parametrize(("text", "needle"), [
    ("optimizer: lion\n", "optimizer"),
    ("optimizer_config: {adamw: {betas: [0.9, 0.98], amsgrad: true}}\n", "optimizer_config.adamw.amsgrad"),
    ("optimizer_config: {rmsprop: {}}\n", "optimizer_config.rmsprop"),
    ("optimizer_config: {sgd: {nesterov: true}}\n", "nesterov needs momentum"),
    ("optimizer: adam\nweight_decay: 0.01\n", "use optimizer: adamw"),
    ("report_to: wandb,neptune\n", "neptune"),
    ("clear_cache_threshold: lots\n", "clear_cache_threshold"),
    ("clear_cache_threshold: -1\n", "clear_cache_threshold"),
    ("hf_dataset: {path: billsum, train_splt: train}\n", "hf_dataset.0.train_splt"),
    ("hf_dataset: {train_split: train}\n", "hf_dataset.0.path"),
])
def test_bad_mlx_lm_values_are_named(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_train_config(write(tmp_path, text))
    assert needle in str(exc.value)


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


# --- hostile configs: any value under the mlx-lm keys is a ConfigError or a config whose schedule evaluates ----
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8))
_json = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                                            max_size=4)), max_leaves=12)
_sched_name = st.sampled_from(["cosine_decay", "linear_schedule", "exponential_decay", "step_decay",
                               "join_schedules", "constant", "cosine", "linear", "nope"])
_number = st.one_of(st.integers(-5, 10**4), st.floats(-1e3, 1e300), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(
    optimizer=st.one_of(st.sampled_from(["adam", "adamw", "sgd", "adafactor", "muon"]), _scalar),
    optimizer_config=st.one_of(_json, st.dictionaries(st.sampled_from(["adam", "adamw", "sgd", "adafactor", "muon"]),
                                                      st.dictionaries(st.sampled_from(
                                                          ["betas", "eps", "weight_decay", "momentum", "nesterov",
                                                           "bias_correction", "relative_step", "ns_steps"]),
                                                          _json, max_size=3), max_size=2)),
    lr_schedule=st.one_of(_json, st.fixed_dictionaries({"name": _sched_name, "arguments": st.one_of(
        st.lists(_number, max_size=4), st.lists(st.one_of(_number, _json), max_size=4)),
        "warmup": st.integers(-2, 50), "warmup_init": _number})),
    extra=st.dictionaries(st.sampled_from(["clear_cache_threshold", "report_to", "hf_dataset", "weight_decay",
                                           "trust_remote_code"]), _json, max_size=3),
)
def test_hostile_mlx_lm_values_are_config_errors_never_crashes(optimizer, optimizer_config, lr_schedule, extra):
    from tickerpulse.config import build
    from tickerpulse.train.schedule import build_schedule

    data = {"optimizer": optimizer, "optimizer_config": optimizer_config, "lr_schedule": lr_schedule, **extra}
    try:
        cfg = build(TrainConfig, data, source="hostile.yaml")
    except ConfigError as exc:
        assert "hostile.yaml" in str(exc)
        return
    try:
        lr = build_schedule(cfg, 100)
    except ConfigError:
        return
    for k in (0, 1, 7, 50, 99, 99.5):
        try:
            value = lr(k)
        except ConfigError as exc:
            assert "lr_schedule" in str(exc)
            return
        assert isinstance(value, float) and math.isfinite(value)
