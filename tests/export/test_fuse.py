"""Fuse on the real SmolLM2: the fused folder's logits equal base + adapter (fp32), and the folder is a
standalone model (plain transformers, tokenizer, chat template, EOS = chat-turn terminator, provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tickerpulse.task.contract import build_messages

PROMPTS = [
    ("Apple beats earnings estimates; $AAPL up 5% after hours on record iPhone sales.", "AAPL"),
    ("Tesla shares slump after weak deliveries.", "TSLA"),
]


def _ids(tok, text: str, ticker: str | None) -> torch.Tensor:
    chat = tok.apply_chat_template(build_messages(text, ticker), tokenize=False, add_generation_prompt=True)
    return tok(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_fused_logits_equal_base_plus_adapter(kind, lora_adapter, dora_adapter, smollm2_path, tmp_path):
    """Independent of fuse's own verification: other prompt, PEFT's own loader, plain transformers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tickerpulse.export.fuse import fuse

    adapter = lora_adapter if kind == "lora" else dora_adapter
    res = fuse(adapter, tmp_path / "fused", model="smollm2-135m", verify=False)
    assert res.dtype == "float32"

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    adapted = PeftModel.from_pretrained(base, adapter).eval()
    fused = AutoModelForCausalLM.from_pretrained(res.path, dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in fused.named_parameters())
    ids = _ids(tok, *PROMPTS[1])
    with torch.no_grad():
        want = adapted(ids).logits
        got = fused(ids).logits
        with adapted.disable_adapter():
            plain = adapted(ids).logits
    assert (want - plain).abs().max() > 0.5, "the adapter must really change the logits"
    diff = float((got - want).abs().max())
    print(f"{kind}: max |fused - (base + adapter)| = {diff:.2e} over {ids.shape[1]} tokens")
    # fp32 rounding only: PEFT's DoRA rescales by a separately computed column norm, the fused weight has it
    # folded in (1.3e-4 on the sentiment-v3 prompt, logits of magnitude ~20); a wrong merge is off by > 0.5
    assert diff < 5e-4


def test_fused_folder_is_standalone(fused_dir: Path, lora_adapter: Path, smollm2_path: Path):
    from transformers import AutoTokenizer, GenerationConfig

    names = {p.name for p in fused_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", "tickerpulse.json"} <= names
    assert not any(n.startswith("adapter") for n in names)
    gen = GenerationConfig.from_pretrained(fused_dir)
    tok = AutoTokenizer.from_pretrained(fused_dir)
    assert tok.convert_ids_to_tokens(gen.eos_token_id) == "<|im_end|>"  # ChatML turn terminator
    assert gen.pad_token_id == tok.pad_token_id == 2
    base_tok = AutoTokenizer.from_pretrained(smollm2_path)
    assert tok.chat_template == base_tok.chat_template
    msgs = build_messages("Nvidia guides above consensus", "NVDA")
    assert tok.apply_chat_template(msgs, tokenize=False) == base_tok.apply_chat_template(msgs, tokenize=False)

    card = json.loads((fused_dir / "tickerpulse.json").read_text())
    assert card["kind"] == "fused"
    assert card["base"]["model"] == "smollm2-135m"
    assert card["adapter"]["path"] == str(lora_adapter.resolve())
    assert card["adapter"]["rank"] == 8 and card["adapter"]["use_dora"] is False
    assert len(card["adapter"]["sha256"]) == 64
    assert "step" in card["adapter"]
    assert card["verify"]["max_abs_logit_diff_fp32"] < 1e-4


def test_fuse_cli_and_user_errors(lora_adapter: Path, tmp_path: Path):
    from tickerpulse.cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["fuse", "--adapter", str(lora_adapter), "--save-path", str(out),
                              "--model", "smollm2-135m", "--dtype", "bfloat16", "--no-verify"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "tickerpulse.json").read_text())
    assert card["verify"] is None and card["dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        key = next(k for k in fh.keys() if k.endswith("q_proj.weight"))
        assert fh.get_tensor(key).dtype == torch.bfloat16

    # a second fuse into the same folder must not silently overwrite it
    import sys

    from tickerpulse.cli._errors import run_app

    argv = sys.argv
    try:
        sys.argv = ["tickerpulse", "fuse", "--adapter", str(lora_adapter), "--save-path", str(out), "--no-verify"]
        assert run_app(app) == 2
        sys.argv = ["tickerpulse", "fuse", "--adapter", str(tmp_path / "missing"), "--save-path", str(tmp_path / "x")]
        assert run_app(app) == 2
    finally:
        sys.argv = argv


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, "chatml"),  # the model's own ChatML template: <|im_end|> closes a turn = EOS
        ("{% for m in messages %}{{ m['content'] }}<|endoftext|>{% endfor %}", "endoftext+eos"),
        ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}", "eos-only"),
        ("", "eos-only"),
    ],
)
def test_stop_tokens_follow_the_chat_template(template, expected, smollm2_path):
    from transformers import AutoTokenizer

    from tickerpulse.export.tokens import chat_turn_terminator, stop_token_ids

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    if template is not None:
        tok.chat_template = template or None
    want = {"chatml": [2], "endoftext+eos": [0, 2], "eos-only": [2]}[expected]
    assert stop_token_ids(tok) == want
    assert chat_turn_terminator(tok) == (want[0] if expected != "eos-only" else None)
