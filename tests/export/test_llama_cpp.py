"""llama.cpp (llama-cpp-python) round trip: our GGUF answers the sentiment prompts like PyTorch, stops on the
chat-turn terminator, and tiny random models of every supported architecture give the same logits.

Slow group: llama-cpp-python builds from source (~20 min on 2 cores) and ships in the `gguf` extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'tickerpulse[gguf]' (builds from source)"
)


@pytest.mark.parametrize("which", ["gguf_f16", "gguf_q8"])
def test_llama_cpp_answers_like_pytorch(which: str, request: pytest.FixtureRequest, fused_dir: Path):
    from tickerpulse.export.roundtrip import check_gguf

    path = request.getfixturevalue(which)
    rep = check_gguf(path, fused_dir, engines=("llama.cpp",))
    (eng,) = rep.engines
    print(json.dumps(rep.to_dict(), indent=1))
    assert eng.skipped is None
    assert eng.checks == {"chat_template_equal": True, "eos_id_equal": True, "bos_id_equal": True,
                          "prompt_ids_equal": True}
    assert eng.agree == len(eng.answers) == 4 and rep.ok  # any difference starts at a near-tie of PyTorch's
    if which == "gguf_f16":
        assert eng.identical >= 3  # f16 rounding: at most one near-tie flip on 4 prompts
    print(f"{rep.weight_type}: llama.cpp {eng.tokens_per_s:.1f} tok/s vs PyTorch fp32 "
          f"{rep.reference_tokens_per_s:.1f} tok/s (40-token answer)")


def test_export_cli_with_check(fused_dir: Path, tmp_path: Path):
    out, report = tmp_path / "m.gguf", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tickerpulse.cli.main", "export", "gguf", "--model", str(fused_dir), "--outtype", "q8_0",
         "--out", str(out), "--check", "--report", str(report)],
        capture_output=True, text=True, timeout=1500, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round trip passed" in proc.stderr
    rep = json.loads(report.read_text())
    assert rep["ok"] and {e["engine"] for e in rep["engines"]} == {"transformers", "llama.cpp"}


TINY = {
    "llama": dict(architectures=["LlamaForCausalLM"], model_type="llama"),
    "llama3-rope": dict(architectures=["LlamaForCausalLM"], model_type="llama", max_position_embeddings=131072,
                        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 64}),
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2"),
}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_tiny_models_logits_match_llama_cpp(arch: str, smollm2_path: Path, tmp_path: Path):
    """Random tiny models (SmolLM2's tokenizer) exported f32: llama.cpp's logits equal PyTorch's."""
    import shutil

    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tickerpulse.export.gguf import export_gguf

    folder = tmp_path / arch
    cfg = AutoConfig.for_model(TINY[arch]["model_type"], **{k: v for k, v in TINY[arch].items() if k != "model_type"},
                               vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=arch != "qwen2",
                               bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(smollm2_path / f, folder / f)
    # SmolLM2's tokenizer on a qwen2 body: name its pre-tokenizer (llama.cpp keys it by model family)
    gguf = export_gguf(folder, tmp_path / f"{arch}.gguf", "f32", tokenizer_pre="smollm").path

    ids = list(range(100, 160))
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    # f32 KV cache (llama.cpp's default is f16, which alone moves logits by ~1e-3 relative)
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=128, logits_all=True, verbose=False, type_k=0, type_v=0)
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    diff = float(np.abs(got - want).max())
    print(f"{arch}: max |llama.cpp - torch| logit = {diff:.2e} (logit scale {np.abs(want).max():.2f})")
    assert diff < 1e-3 * max(1.0, float(np.abs(want).max()))
    assert (got.argmax(-1) == want.argmax(-1)).all()
