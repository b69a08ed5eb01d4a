"""mlx-lm's optimizers on torch compute mlx's update: the same parameters, gradients and options through
torch (train.optimizers) and through mlx.optimizers give the same weights after a few steps; what torch cannot
compute is refused with a ConfigError naming the way out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig
from tickerpulse.train.optimizers import build_optimizer
from tickerpulse.train.schedule import build_schedule

# (optimizer, optimizer_config options, learning rate) that torch reproduces
CASES = [
    ("adam", {"bias_correction": True}, 1e-2),
    ("adamw", {"bias_correction": True, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.05}, 1e-2),
    ("adamw", {"bias_correction": True}, 1e-2),  # mlx's default weight decay 0.01
    ("sgd", {}, 5e-2),
    ("sgd", {"momentum": 0.9, "weight_decay": 1e-2}, 5e-2),
    ("sgd", {"momentum": 0.9, "nesterov": True}, 5e-2),
    ("adafactor", {}, 1e-5),  # relative step: the learning rate is not used (as in mlx)
    ("adafactor", {"relative_step": False}, 1e-3),
    ("adafactor", {"relative_step": False, "warmup_init": False, "clip_threshold": 2.0, "decay_rate": -0.5}, 1e-3),
    ("adafactor", {"warmup_init": True}, 1e-3),
    ("muon", {}, 2e-2),
    ("muon", {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "ns_steps": 3}, 2e-2),
]


def _mlx_update(name: str, options: dict, lr_at, weights: list[np.ndarray], grads: list[list[np.ndarray]]):
    import mlx.core as mx
    import mlx.optimizers as optim

    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "adafactor": optim.Adafactor,
           "muon": optim.Muon}[name]
    opt = cls(learning_rate=lr_at(0), **options)
    params = {f"w{i}": mx.array(w) for i, w in enumerate(weights)}
    for k, step_grads in enumerate(grads):
        opt.learning_rate = lr_at(k)
        params = opt.apply_gradients({f"w{i}": mx.array(g) for i, g in enumerate(step_grads)}, params)
        mx.eval(params)
    return [np.array(params[f"w{i}"]) for i in range(len(weights))]


@pytest.mark.parametrize(("name", "options", "lr"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_torch_optimizer_matches_mlx(name: str, options: dict, lr: float):
    pytest.importorskip("mlx.optimizers", reason="mlx (the reference) is not installed: pip install 'tickerpulse[mlx]'")
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)]
    if name not in ("muon",):
        weights.append(rng.normal(size=(5,)).astype(np.float32))  # a vector too (not factored / no Newton-Schulz)
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in weights] for _ in range(4)]
    grads[0][0][:] = 0.0  # LoRA's A gets a zero gradient on the first step (B starts at 0): no nan, no move
    cfg = TrainConfig(optimizer=name, learning_rate=lr, optimizer_config={name: options})
    lr_at = build_schedule(cfg, 4)

    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    opt = build_optimizer(cfg, params)
    for k, step_grads in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = lr_at(k)
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    ours = [p.detach().numpy() for p in params]
    ref = _mlx_update(name, {k: v for k, v in options.items()}, lr_at, weights, grads)
    moved = max(float(np.abs(r - w).max()) for r, w in zip(ref, weights, strict=True))
    assert moved > 1e-6  # the reference did change the weights
    # torch's Muon orthogonalizes in bfloat16 (as Keller Jordan's reference), mlx in float32: ~1% of the update
    tol = 2e-2 if name == "muon" else 2e-3
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * moved)


@pytest.mark.parametrize(("name", "options", "needle"), [
    ("adam", {"bias_correction": False}, "bias_correction: false"),
    ("adamw", {"bias_correction": False}, "backend: mlx"),
    ("adafactor", {"scale_parameter": False}, "scale_parameter"),
    ("adafactor", {"beta_1": 0.9}, "beta_1"),
    ("adafactor", {"clip_threshold": 0.5}, "clip_threshold"),
])
def test_what_torch_cannot_compute_is_refused(name: str, options: dict, needle: str):
    cfg = TrainConfig(optimizer=name, optimizer_config={name: options})
    with pytest.raises(ConfigError, match=needle):
        build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2, 2))])


def test_muon_refuses_vectors_and_top_level_weight_decay_overrides():
    with pytest.raises(ConfigError, match="2-D"):
        build_optimizer(TrainConfig(optimizer="muon"), [torch.nn.Parameter(torch.zeros(3))])
    opt = build_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.2), [torch.nn.Parameter(torch.zeros(2, 2))])
    assert opt.param_groups[0]["weight_decay"] == 0.2
    opt = build_optimizer(TrainConfig(optimizer="adamw"), [torch.nn.Parameter(torch.zeros(2, 2))])
    assert opt.param_groups[0]["weight_decay"] == 0.01  # mlx's AdamW default
    assert isinstance(build_optimizer(TrainConfig(), [torch.nn.Parameter(torch.zeros(1))]), torch.optim.Adam)


def test_mlx_lm_differences_name_only_keys_left_out():
    from tickerpulse.train.config import mlx_lm_differences

    every = mlx_lm_differences(TrainConfig(), "torch")
    assert any(d.startswith("mask_prompt") for d in every) and any("bias-corrected" in d for d in every)
    set_all = TrainConfig(mask_prompt=True, max_grad_norm=None, train=True, model="m", data="d", packing=False,
                          clear_cache_threshold=0, optimizer="sgd")
    assert mlx_lm_differences(set_all, "torch") == []
