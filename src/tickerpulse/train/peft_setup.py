"""Build the trainable model: LoRA / DoRA / QLoRA through PEFT, or full fine-tuning of the top blocks.

- `num_layers` = the last N transformer blocks (-1 = all), as in mlx-lm; PEFT's `layers_to_transform`.
- `lora_parameters.keys`: mlx-lm style paths (`self_attn.q_proj`), plain names (`q_proj`), or
  `all-linear` / None = every linear layer of those blocks. A key that matches nothing is an error.
- `lora_alpha = scale * rank` (mlx-lm's `scale` multiplies the low-rank update, PEFT's scaling is alpha / r).
- Frozen base dtype (`dtype: auto`): on a CPU with native bf16 (avx512_bf16 / AMX) a LoRA/DoRA base is loaded
  in bf16, which is ~1.4x faster here; the adapter weights and the optimizer stay fp32 (LoRA's products run in
  bf16 on the fly, see `lora_in_base_dtype`). Full fine-tuning on
  CPU stays fp32 (AdamW on bf16 weights loses small updates). Pass `dtype: float32` for bit-exact runs.
- Attention: packed samples attend only to themselves through `attention.varlen_attention` (per-sample
  attention instead of a masked full row) when the model supports it.
- No backward below the lowest trained block: nothing below it requires grad, so autograd records no graph
  there (we never call `enable_input_require_grads`, which would force a full backward).
- QLoRA: 4-bit NF4 base through bitsandbytes. Where bitsandbytes cannot run (not installed, or no kernel for
  this device) the error says so instead of silently training something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tickerpulse.config import ConfigError
from tickerpulse.models.loading import cpu_supports_bf16, pick_device, pick_dtype
from tickerpulse.train.attention import enable_varlen
from tickerpulse.train.config import TrainConfig


@dataclass
class TrainableModel:
    """The model to train and what was made trainable."""

    model: Any  # PeftModel (lora/dora/qlora) or the plain HF model (full)
    causal_lm: Any  # the HF *ForCausalLM inside (LoRA layers injected)
    device: str
    base_dtype: torch.dtype
    trained_layers: list[int]
    trainable_params: int
    total_params: int
    kind: str  # "peft" or "full"
    varlen: bool = False  # attention.varlen_attention is on: batches must carry a layout

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the PEFT adapter state dict, or the trained full weights."""
        if self.kind == "peft":
            from peft import get_peft_model_state_dict

            return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        return {n: p.detach().cpu().contiguous() for n, p in self.causal_lm.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.kind == "peft":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, state)
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise ConfigError(f"adapter file does not fit this model/config: unexpected keys {unexpected[:3]}")
        else:
            missing = set(n for n, p in self.causal_lm.named_parameters() if p.requires_grad) - set(state)
            if missing:
                raise ConfigError(f"checkpoint lacks trained weights {sorted(missing)[:3]}")
            self.causal_lm.load_state_dict(state, strict=False)


def text_config(config: Any) -> Any:
    """The decoder config (multimodal configs nest it)."""
    return getattr(config, "text_config", None) or config


def resolve_base_dtype(cfg: TrainConfig, device: str) -> torch.dtype:
    """The dtype of the frozen base (see the module docstring)."""
    if cfg.dtype != "auto":
        return pick_dtype(cfg.dtype, device)
    if device == "cpu":
        return torch.bfloat16 if cfg.fine_tune_type != "full" and cpu_supports_bf16() else torch.float32
    if cfg.fine_tune_type == "full" and device == "mps":
        return torch.float32
    return pick_dtype("auto", device)


def trained_layer_indices(num_layers: int, total: int) -> list[int]:
    if num_layers == -1 or num_layers >= total:
        return list(range(total))
    return list(range(total - num_layers, total))


def _quantization_config(cfg: TrainConfig, device: str, compute_dtype: torch.dtype) -> Any:
    from tickerpulse._optional import require

    bnb = require("bitsandbytes", "QLoRA (4-bit base)")
    from transformers import BitsAndBytesConfig

    qcfg = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute_dtype)
            if cfg.quantize == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
    # Prove a kernel exists for this device before loading a model with it.
    try:
        lin = bnb.nn.Linear4bit(64, 64, compute_dtype=compute_dtype, quant_type="nf4") if cfg.quantize == "4bit" \
            else bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        lin = lin.to(device)
        lin(torch.randn(2, 64, dtype=compute_dtype, device=device)).sum()
    except Exception as exc:  # bitsandbytes raises many types when a backend is missing
        raise ConfigError(
            f"QLoRA needs bitsandbytes {cfg.quantize} kernels for device '{device}', and they do not run here "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Use fine_tune_type: lora "
            "(on this CPU a bf16 frozen base already halves memory), or train on a CUDA GPU."
        ) from None
    return qcfg


def build_trainable_model(cfg: TrainConfig, model_dir: str | Path) -> TrainableModel:
    """Load the base from `model_dir` and make the configured part trainable.

    Raises:
        ConfigError: unknown LoRA key, bad num_layers, QLoRA without a working bitsandbytes, compile on a CPU
            without a C++ compiler.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(cfg.device)
    dtype = resolve_base_dtype(cfg, device)
    if cfg.compile:
        check_compiler(device)  # before loading the weights, not after
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.quantize:
        if cfg.fine_tune_type == "full":
            raise ConfigError("quantize cannot be combined with fine_tune_type: full (quantized weights do not train)")
        # compute in the base dtype: fp32 on CPUs without native bf16, where emulated bf16 is slower
        kwargs["quantization_config"] = _quantization_config(cfg, device, dtype)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if not cfg.quantize:
        model.to(device)
    model.config.use_cache = False  # packed masks are skipped when a cache is passed (see packing.py)
    n_blocks = int(text_config(model.config).num_hidden_layers)
    layers = trained_layer_indices(cfg.num_layers, n_blocks)
    for p in model.parameters():
        p.requires_grad_(False)

    if cfg.fine_tune_type == "full":
        kind = "full"
        hit = 0
        for name, p in model.named_parameters():
            if _block_index(name) in layers:
                p.requires_grad_(True)
                hit += 1
        if not hit:
            raise ConfigError("fine_tune_type full: found no transformer blocks named '<prefix>.layers.N.'")
        peft_model = causal_lm = model
    else:
        kind = "peft"
        from peft import LoraConfig, get_peft_model

        if cfg.quantize:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lp = cfg.lora_parameters
        keys = lp.keys
        # PEFT refuses "all-linear" together with layers_to_transform, so list the linear layers explicitly
        target = _block_linear_names(model, layers) if not keys or keys == ["all-linear"] else list(keys)
        _check_keys(model, target, layers)
        lcfg = LoraConfig(
            r=lp.rank, lora_alpha=lp.lora_alpha, lora_dropout=lp.dropout, target_modules=target,
            layers_to_transform=None if len(layers) == n_blocks else layers, use_dora=cfg.fine_tune_type == "dora",
            bias="none", task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lcfg)  # adapters are created in fp32 (autocast_adapter_dtype)
        causal_lm = peft_model.get_base_model()
        for p in peft_model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        if dtype in (torch.bfloat16, torch.float16) and cfg.fine_tune_type == "lora" and not cfg.quantize:
            lora_in_base_dtype(causal_lm)
    varlen = enable_varlen(causal_lm, cfg.max_seq_length)
    if cfg.grad_checkpoint:
        # non-reentrant: works although the block inputs do not require grad
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        compile_blocks(causal_lm)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return TrainableModel(peft_model, causal_lm, device, dtype, layers, trainable, total, kind, varlen)


def check_compiler(device: str) -> None:
    """Raises ConfigError on CPU without a C++ compiler (inductor builds its CPU kernels with one)."""
    if device != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as e:  # inductor raises a plain RuntimeError naming the compilers it tried
        raise ConfigError(f"compile: true needs a C++ compiler for inductor's CPU kernels ({e}); "
                          "install g++ or set compile: false") from e


def compile_blocks(causal_lm: Any) -> None:
    """torch.compile every transformer block in place (`check_compiler` first on CPU).

    Per block rather than the whole model (torchtune's choice too): the blocks share a few graphs (frozen,
    adapted, with and without grad), so compiling takes seconds per graph instead of minutes, and the varlen
    attention's layout stays a plain keyword. In place (`module.compile`), so parameter names, checkpoints
    and adapters are unchanged. Shapes vary with every packed batch, hence `dynamic=True`.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in causal_lm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not blocks:
        raise ConfigError("compile: found no transformer blocks (transformers GradientCheckpointingLayer) to compile")
    for block in blocks:
        block.compile(dynamic=True)


def _linear_in_input_dtype(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


def lora_in_base_dtype(causal_lm: Any) -> None:
    """Run LoRA's low-rank products in the (bf16) activation dtype; the fp32 weights stay the masters.

    PEFT casts every LoRA layer's input up to the adapter's fp32 and the result back down: two copies of a
    full activation per adapted linear, forward and backward (~20% of a step here). Casting the rank-r
    weights instead is what autocast does: the product runs in bf16 with fp32 accumulation, gradients reach
    the fp32 weights through the cast. Plain LoRA only (DoRA's norms stay in fp32).
    """
    import types

    for module in causal_lm.modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "lora_B")):
            continue
        module.cast_input_dtype_enabled = False
        for sub in [*module.lora_A.values(), *module.lora_B.values()]:
            if isinstance(sub, torch.nn.Linear):
                sub.forward = types.MethodType(_linear_in_input_dtype, sub)


def _block_index(param_name: str) -> int | None:
    parts = param_name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "h", "blocks") and b.isdigit():
            return int(b)
    return None


def _block_linear_names(model: Any, layers: list[int]) -> list[str]:
    """Paths of the linear layers inside the trained blocks, relative to the block ('self_attn.q_proj')."""
    names = set()
    for name, module in model.named_modules():
        idx = _block_index(name + ".")
        if idx in layers and isinstance(module, torch.nn.Linear):
            parts = name.split(".")
            at = next(i for i, (a, b) in enumerate(zip(parts, parts[1:])) if a in ("layers", "h", "blocks") and b.isdigit())
            names.add(".".join(parts[at + 2 :]))
    if not names:
        raise ConfigError("found no linear layers inside blocks named '<prefix>.layers.N.' to put LoRA on")
    return sorted(names)


def _check_keys(model: Any, keys: list[str], layers: list[int]) -> None:
    names = [n for n, m in model.named_modules() if _block_index(n + ".") in layers]
    for key in keys:
        if not any(n == key or n.endswith("." + key) for n in names):
            linear = _block_linear_names(model, layers)
            raise ConfigError(f"lora_parameters.keys: '{key}' matches no module in the trained blocks; "
                              f"linear layers there: {', '.join(linear[:12])}")
