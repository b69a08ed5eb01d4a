"""PEFT <-> mlx-lm adapter conversion: the tensor mapping, refusals with a reason, and the same logits both ways
(MLX on Linux with mlx[cpu]; skipped where mlx / mlx-lm are not installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tickerpulse.models.mlx import import_mlx

pytest.importorskip("mlx")
import_mlx()  # before anything imports mlx.core: torch's BLAS on Linux (see tickerpulse.models.mlx)
pytest.importorskip("mlx_lm")

from tickerpulse.models.adapter_convert import convert_run  # noqa: E402
from tickerpulse.models.adapter_format import (  # noqa: E402
    AdapterFormatError,
    mlx_to_peft_weights,
    peft_to_mlx_weights,
)

from .conftest import mlx_logits  # noqa: E402

TEXT = "<|im_start|>user\n$AAPL beats earnings, shares jump 5%<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def peft_adapter(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A PEFT LoRA on the top 3 blocks of the real SmolLM2 with random non-zero B, saved as a PEFT folder,
    and the torch fp32 logits it gives."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=12, target_modules=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"],
                     layers_to_transform=[27, 28, 29], task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    out = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(str(out))
    ids = AutoTokenizer.from_pretrained(str(smollm2_path))(TEXT)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    return out, ids, logits


def test_tensor_mapping_round_trips_and_transposes():
    rng = np.random.default_rng(0)
    peft = {"base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight": rng.normal(size=(4, 16)).astype("f4"),
            "base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight": rng.normal(size=(32, 4)).astype("f4")}
    mlx, layers, keys, rank, dora = peft_to_mlx_weights(peft)
    assert mlx["model.layers.3.self_attn.q_proj.lora_a"].shape == (16, 4)
    assert mlx["model.layers.3.self_attn.q_proj.lora_b"].shape == (4, 32)
    assert (layers, keys, rank, dora) == ([3], ["self_attn.q_proj"], 4, False)
    back = mlx_to_peft_weights(mlx)[0]
    assert all(np.array_equal(back[k], peft[k]) for k in peft)
    # DoRA: the magnitude vector carries over as mlx-lm's `m`
    peft["base_model.model.model.layers.3.self_attn.q_proj.lora_magnitude_vector"] = rng.normal(size=32).astype("f4")
    mlx, *_, dora = peft_to_mlx_weights(peft)
    assert dora and mlx["model.layers.3.self_attn.q_proj.m"].shape == (32,)
    back = mlx_to_peft_weights(mlx)[0]
    assert set(back) == set(peft) and all(np.array_equal(back[k], peft[k]) for k in peft)


def test_unsupported_adapters_are_refused_with_a_reason():
    from tickerpulse.models.adapter_format import mlx_config_from_peft

    with pytest.raises(AdapterFormatError, match="no LoRA tensors"):
        peft_to_mlx_weights({"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": np.ones(3)})
    with pytest.raises(AdapterFormatError, match="embeddings"):
        peft_to_mlx_weights({"base_model.model.model.embed_tokens.lora_embedding_A": np.ones((2, 3))})
    with pytest.raises(AdapterFormatError, match="unsupported adapter tensor"):
        mlx_to_peft_weights({"model.embed_tokens.lora_a": np.ones((3, 2))})
    with pytest.raises(AdapterFormatError, match="last num_layers"):
        mlx_config_from_peft({"r": 2}, [0, 1], ["q_proj"], 2, n_blocks=30)
    with pytest.raises(AdapterFormatError, match="rank_pattern"):
        mlx_config_from_peft({"r": 2, "rank_pattern": {"q_proj": 4}}, [29], ["q_proj"], 2, n_blocks=30)


@pytest.mark.slow
def test_peft_adapter_converted_to_mlx_gives_the_same_logits_and_converts_back(peft_adapter, smollm2_path, tmp_path):
    from safetensors.numpy import load_file

    src, ids, torch_logits = peft_adapter
    mlx_dir = convert_run(src, tmp_path / "mlx", to="mlx")
    cfg = json.loads((mlx_dir / "adapter_config.json").read_text())
    assert cfg["num_layers"] == 3 and cfg["lora_parameters"]["scale"] == pytest.approx(3.0)
    mlx_out = mlx_logits(smollm2_path, ids, mlx_dir)
    base_logits = mlx_logits(smollm2_path, ids)
    diff = np.abs(mlx_out - torch_logits).max()
    effect = np.abs(base_logits - torch_logits).max()
    assert effect > 0.05, "the random adapter must change the logits for the test to mean anything"
    assert diff < 1e-3, f"max abs logit diff MLX vs PEFT {diff:.2e} (adapter effect {effect:.2f})"

    back = convert_run(mlx_dir, tmp_path / "peft", to="peft")
    orig, again = load_file(str(src / "adapter_model.safetensors")), load_file(str(back / "adapter_model.safetensors"))
    assert set(orig) == set(again) and all(np.array_equal(orig[k], again[k]) for k in orig)
    a, b = json.loads((src / "adapter_config.json").read_text()), json.loads((back / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "layers_to_transform"):
        assert a[key] == b[key], key
    assert set(a["target_modules"]) == set(b["target_modules"])
