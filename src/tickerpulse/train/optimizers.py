"""mlx-lm's optimizers on torch: `optimizer` + `optimizer_config.<name>` (mlx.optimizers' argument names and
defaults) -> the torch.optim class that computes the same update.

| mlx-lm    | torch                      | mapping                                                                  |
|-----------|----------------------------|--------------------------------------------------------------------------|
| adam      | torch.optim.Adam           | betas, eps                                                               |
| adamw     | torch.optim.AdamW          | betas, eps, weight_decay (decoupled in both, default 0.01)               |
| sgd       | torch.optim.SGD            | momentum, weight_decay (L2 on the gradient in both), dampening, nesterov |
| adafactor | torch.optim.Adafactor      | decay_rate -> beta2_decay, clip_threshold -> d, eps (sqrt of eps[0]), wd |
| muon      | torch.optim.Muon (+ L2)    | momentum, nesterov, ns_steps; weight_decay as mlx's L2 on the gradient   |

Known limits, each an error naming the way out rather than a silent change: torch's Adam/AdamW always correct
the moment bias (mlx's default `bias_correction: false` cannot be reproduced: null/true only); torch's
Adafactor always scales by the parameter RMS and has no first moment (`scale_parameter: false`, `beta_1` are
refused, and so is a `clip_threshold` below 1); torch's Muon takes 2-D parameters only (LoRA's A/B matrices are; DoRA magnitudes and full
fine-tuning's norms are not). Differences that remain: SGD with dampening > 0 damps the first step too in
mlx (torch: not); Adafactor's weight decay is scaled by the learning rate in torch and by the relative step
size in mlx, and with `relative_step: false` torch caps the step at 1/sqrt(t) (no effect while lr <= 1/sqrt(t));
torch's Muon orthogonalizes in bfloat16 (Keller Jordan's reference), mlx in the parameter dtype (updates
agree to ~1%).
"""

from __future__ import annotations

from typing import Any

import torch

from tickerpulse.config import ConfigError
from tickerpulse.train.config import TrainConfig


class MlxMuon(torch.optim.Muon):
    """torch's Muon with mlx's weight decay: an L2 term added to the gradient before the momentum (torch's
    own `weight_decay` is decoupled and stays 0)."""

    def __init__(self, params: Any, l2: float = 0.0, **kwargs: Any):
        super().__init__(params, weight_decay=0.0, **kwargs)
        for group in self.param_groups:
            group["l2"] = l2

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            if group.get("l2"):
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=group["l2"])
        return super().step(closure)


def optimizer_kwargs(cfg: TrainConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """(torch class, keyword arguments besides params and lr) for `cfg.optimizer`; ConfigError if torch cannot
    compute mlx's update for these options."""
    name = cfg.optimizer
    o = getattr(cfg.optimizer_config, name)
    where = f"optimizer_config.{name}"
    wd = cfg.weight_decay if cfg.weight_decay is not None else getattr(o, "weight_decay", 0.0)
    if name in ("adam", "adamw"):
        if o.bias_correction is False:
            raise ConfigError(f"{where}.bias_correction: false is mlx's Adam without bias correction, which "
                              "torch.optim does not offer (it always corrects); drop the key (or set true) on the "
                              "torch backend, or train with backend: mlx")
        kw: dict[str, Any] = {"betas": tuple(o.betas), "eps": o.eps}
        if name == "adamw":
            return torch.optim.AdamW, {**kw, "weight_decay": wd}
        return torch.optim.Adam, {**kw, "weight_decay": 0.0}
    if name == "sgd":
        return torch.optim.SGD, {"momentum": o.momentum, "weight_decay": wd, "dampening": o.dampening,
                                 "nesterov": o.nesterov}
    if name == "adafactor":
        if not o.scale_parameter:
            raise ConfigError(f"{where}.scale_parameter: false is not available in torch.optim.Adafactor (it always "
                              "scales the step by the parameter RMS); drop it or train with backend: mlx")
        if o.beta_1 is not None:
            raise ConfigError(f"{where}.beta_1: torch.optim.Adafactor keeps no first moment; drop beta_1 or train "
                              "with backend: mlx")
        if o.clip_threshold < 1.0:
            raise ConfigError(f"{where}.clip_threshold: torch.optim.Adafactor takes 1 or more (its `d`), got "
                              f"{o.clip_threshold:g}; raise it or train with backend: mlx")
        # mlx adds eps[0] to g^2; torch floors the variance at eps1^2: eps1 = sqrt(eps[0]) keeps the same floor
        # (1e-30 passed as is would square to 0 in float32 and a zero gradient would give inf * 0 = nan)
        return torch.optim.Adafactor, {"beta2_decay": o.decay_rate, "eps": (o.eps[0] ** 0.5, o.eps[1]),
                                       "d": o.clip_threshold, "weight_decay": wd}
    if name == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise ConfigError(f"optimizer muon needs torch >= 2.9 (torch.optim.Muon); this is torch "
                              f"{torch.__version__}: upgrade torch or choose adamw")
        return MlxMuon, {"l2": wd, "momentum": o.momentum, "nesterov": o.nesterov, "ns_steps": o.ns_steps}
    raise ConfigError(f"optimizer: unknown optimizer {name!r}")  # unreachable: the config is a Literal


def build_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer for `cfg` (mlx-lm's `optimizer` / `optimizer_config`); lr is set per step by the
    schedule."""
    cls, kwargs = optimizer_kwargs(cfg)
    if cfg.optimizer == "muon":
        bad = [tuple(p.shape) for p in params if p.ndim != 2]
        if bad:
            raise ConfigError(f"optimizer muon: torch.optim.Muon takes 2-D parameters only, this run trains "
                              f"{len(bad)} others (e.g. shape {bad[0]}; DoRA magnitudes, norms, biases); use "
                              f"fine_tune_type: lora or another optimizer")
    try:
        return cls(params, lr=cfg.learning_rate, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer_config.{cfg.optimizer}: {exc}") from None
