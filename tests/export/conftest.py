"""Fixtures for the export tests: real SmolLM2 + PEFT adapters with random (non-zero) LoRA B weights, so
the adapter really changes the logits, and one fused folder shared by the GGUF tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ADAPTER_B_STD = 0.02  # moves SmolLM2's logits by ~1-3 and flips a few greedy tokens


def make_adapter(base_dir: Path, out: Path, *, dora: bool, seed: int = 0) -> Path:
    """A PEFT LoRA/DoRA adapter on every linear layer of `base_dir`, B ~ N(0, 0.02), saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", use_dora=dora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape) * ADAPTER_B_STD)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_adapter(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(smollm2_path, tmp_path_factory.mktemp("adapters") / "lora", dora=False)


@pytest.fixture(scope="session")
def dora_adapter(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(smollm2_path, tmp_path_factory.mktemp("adapters") / "dora", dora=True, seed=1)


@pytest.fixture(scope="session")
def fused_dir(lora_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 + the LoRA adapter, fused (fp32) into a standalone folder."""
    from tickerpulse.export.fuse import fuse

    return fuse(lora_adapter, tmp_path_factory.mktemp("fused") / "smollm2-lora", model="smollm2-135m").path


@pytest.fixture(scope="session")
def gguf_f16(fused_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickerpulse.export.gguf import export_gguf

    return export_gguf(fused_dir, tmp_path_factory.mktemp("gguf") / "model-f16.gguf", "f16").path


@pytest.fixture(scope="session")
def gguf_q8(fused_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickerpulse.export.gguf import export_gguf

    return export_gguf(fused_dir, tmp_path_factory.mktemp("gguf") / "model-q8_0.gguf", "q8_0").path
