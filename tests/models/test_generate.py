"""Generation with the real SmolLM2: streaming CLI with no network, batched == unbatched greedy, EOS and
stop strings, incremental detokenization of multi-byte characters, reproducible sampling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickerpulse.task.contract import build_messages
from tickerpulse.models.generate import (
    IncrementalDecoder,
    encode_prompt,
    eos_token_ids,
    generate_batch,
    stream_generate,
)

# Prompts of different lengths, so the batch really is left-padded.
PROMPTS = [
    build_messages("$NVDA jumps after record data-center revenue and a raised outlook", "NVDA"),
    [{"role": "user", "content": "Name a stock exchange."}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Is the sky blue?"}],
]
# Greedy SmolLM2 answers this one in a few tokens and then emits <|im_end|>.
# the generator's mechanics need a prompt the base model answers in a few tokens: under sentiment-v1's shorter
# system prompt it says "The market flat." and stops (under v2 it rambles past any small cap)
SHORT = build_messages("Markets flat", None, "sentiment-v1")


def test_eos_ids(smollm2):
    model, tok = smollm2
    assert 2 in eos_token_ids(model, tok)  # <|im_end|>


def test_batched_equals_unbatched_greedy_and_hf_generate(smollm2):
    import torch

    model, tok = smollm2
    batched = generate_batch(model, tok, PROMPTS, max_tokens=8, batch_size=3)
    single = [generate_batch(model, tok, [p], max_tokens=8)[0] for p in PROMPTS]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.n_tokens > 0 and r.prompt_tokens > 0 and r.latency > 0 for r in batched)
    # the reference implementation agrees token for token
    ids = torch.tensor([encode_prompt(tok, PROMPTS[0])])
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert ref[0, ids.shape[1]:].tolist()[: batched[0].n_tokens] == batched[0].token_ids


def test_stops_at_eos_and_at_max_tokens(smollm2):
    model, tok = smollm2
    done, cut = generate_batch(model, tok, [SHORT, SHORT], max_tokens=24, batch_size=2)[0], None
    assert done.finish_reason == "stop" and 0 < done.n_tokens < 24
    assert "<|im_end|>" not in done.text and 2 not in done.token_ids
    cut = generate_batch(model, tok, [SHORT], max_tokens=2)[0]
    assert cut.finish_reason == "length" and cut.n_tokens == 2
    # mixed batch: one row stops at EOS, the other runs to the cap; both right
    mixed = generate_batch(model, tok, [SHORT, PROMPTS[0]], max_tokens=done.n_tokens + 3, batch_size=2)
    assert mixed[0].token_ids == done.token_ids and mixed[0].finish_reason == "stop"
    assert mixed[1].finish_reason == "length" and mixed[1].n_tokens == done.n_tokens + 3


def test_stream_matches_batch_and_records_stats(smollm2):
    model, tok = smollm2
    ref = generate_batch(model, tok, [SHORT], max_tokens=24)[0]
    stream = stream_generate(model, tok, SHORT, max_tokens=24)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == ref.text == stream.text
    s = stream.stats
    assert s.finish_reason == "stop" and s.generated_tokens == ref.n_tokens
    assert s.prompt_tokens == len(encode_prompt(tok, SHORT)) and s.ttft > 0 and s.seconds >= s.ttft
    assert s.tokens_per_s > 0 and s.peak_memory_mb > 100


def test_stop_strings(smollm2):
    model, tok = smollm2
    full = generate_batch(model, tok, [SHORT], max_tokens=24)[0].text
    word = full.split()[1]  # stop at the second word
    expect = full[: full.index(word)]
    got = generate_batch(model, tok, [SHORT], max_tokens=24, stop=[word])[0]
    assert got.text == expect and got.finish_reason == "stop"
    stream = stream_generate(model, tok, SHORT, max_tokens=24, stop=[word])
    assert "".join(stream) == expect and stream.stats.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(smollm2):
    model, tok = smollm2
    kw = dict(max_tokens=6, temperature=1.0, top_p=0.95)
    a = generate_batch(model, tok, PROMPTS[1:], seed=7, **kw)
    b = generate_batch(model, tok, PROMPTS[1:], seed=7, **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    # a vanishing nucleus keeps only the top token: sampling equals greedy
    greedy = generate_batch(model, tok, PROMPTS[1:2], max_tokens=4)[0]
    nucleus = generate_batch(model, tok, PROMPTS[1:2], max_tokens=4, temperature=0.8, top_p=1e-6, seed=1)[0]
    assert nucleus.token_ids == greedy.token_ids


@pytest.mark.parametrize("text", ["Ça monte 📈🚀 $TSLA — 株価 +5%", "naïve café ñ 😀😀 done"])
def test_incremental_decoder_keeps_characters_whole(smollm2, text):
    _, tok = smollm2
    ids = tok(text, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tok)
    pieces = [dec.add(i) for i in ids] + [dec.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == tok.decode(ids) == text
    assert len([p for p in pieces if p]) > 3  # it did stream, not emit everything at the end


def test_cli_generate_streams_with_no_network(smollm2):
    """The console script on the built-in name, offline, with every proxy pointing nowhere."""
    exe = Path(sys.executable).with_name("tickerpulse")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    proc = subprocess.run([str(exe), "generate", "--model", "smollm2-135m", "--prompt", "Name a stock exchange.",
                           "--max-tokens", "8"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text, err = proc.stdout, proc.stderr
    assert text.strip()
    assert "tok/s" in err and "peak memory" in err and "MiB" in err
    model, tok = smollm2
    ref = generate_batch(model, tok, [[{"role": "user", "content": "Name a stock exchange."}]], max_tokens=8)[0]
    assert text.rstrip("\n") == ref.text  # the CLI streams exactly the greedy answer


def test_cli_generate_rejects_raw_with_system():
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    res = CliRunner().invoke(app, ["generate", "--prompt", "x", "--raw", "--system", "s"])
    assert res.exit_code == 2 and "--system" in res.output


def test_cli_generate_with_adapter(smollm2, smollm2_path, tmp_path):
    """--adapter puts a real (random, non-zero) PEFT LoRA on the base: the greedy answer changes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "run"))
    del base, lora
    prompt = "Name a stock exchange."
    res = CliRunner().invoke(app, ["generate", "--adapter", str(tmp_path / "run"), "--prompt", prompt,
                                   "--max-tokens", "6"])
    assert res.exit_code == 0, res.output
    model, tok = smollm2
    plain = generate_batch(model, tok, [[{"role": "user", "content": prompt}]], max_tokens=6)[0].text
    assert res.stdout.strip() and res.stdout.strip() != plain.strip()
