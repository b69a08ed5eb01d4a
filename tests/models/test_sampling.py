"""Sampling cuts (top-k, min-p, top-p) on synthetic logits and on the real SmolLM2, and the mlx-lm flag names
of `tickerpulse generate` (--adapter-path, --system-prompt, --top-k, --min-p)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tickerpulse.models.generate import _pick, generate_batch, stream_generate

PROMPT = [{"role": "user", "content": "Name a stock exchange."}]


def _allowed(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, min_p: float) -> set[int]:
    """The tokens every cut keeps, computed the slow obvious way (one row)."""
    probs = torch.softmax(logits.double() / temperature, -1).tolist()
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep, mass = set(), 0.0
    for rank, i in enumerate(ranked):
        ok = (top_p >= 1.0 or mass < top_p) and (min_p <= 0 or probs[i] >= min_p * probs[ranked[0]]) \
            and (top_k <= 0 or rank < top_k)
        if ok or rank == 0:
            keep.add(i)
        mass += probs[i]
    return keep


@settings(max_examples=200, deadline=None)
@given(
    logits=st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=40),
    temperature=st.floats(0.05, 3.0),
    top_p=st.sampled_from([1.0, 0.9, 0.5, 0.1, 1e-6]),
    top_k=st.integers(0, 45),
    min_p=st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_is_always_a_token_every_cut_keeps(logits, temperature, top_p, top_k, min_p, seed):
    row = torch.tensor(logits, dtype=torch.float32)
    # ties at a cut boundary are decided by float32 rounding in _pick: keep such rows out of the oracle
    probs = torch.softmax(row.double() / temperature, -1)
    if len(set(probs.round(decimals=9).tolist())) < len(logits):
        return
    gen = torch.Generator().manual_seed(seed)
    picks = _pick(row.expand(8, -1), temperature, top_p, gen, top_k=top_k, min_p=min_p).tolist()
    assert set(picks) <= _allowed(row, temperature, top_p, top_k, min_p)


def test_top_k_one_and_min_p_one_are_greedy_and_top_k_spreads():
    logits = torch.tensor([[2.0, 1.9, 1.8, -5.0, -6.0]])
    gen = torch.Generator().manual_seed(0)
    for kw in ({"top_k": 1}, {"min_p": 1.0}):
        assert {_pick(logits, 1.0, 1.0, gen, **kw).item() for _ in range(50)} == {0}
    seen = {_pick(logits, 1.0, 1.0, gen, top_k=3).item() for _ in range(300)}
    assert seen == {0, 1, 2}  # the k most likely, each drawn, never the tail
    seen = {_pick(logits, 1.0, 1.0, gen, min_p=0.5).item() for _ in range(300)}
    assert seen == {0, 1, 2}  # exp(-7) of the top token is below half: cut


def test_real_model_top_k_1_equals_greedy_and_sampling_is_reproducible(smollm2):
    model, tok = smollm2
    greedy = generate_batch(model, tok, [PROMPT], max_tokens=5)[0]
    for kw in ({"top_k": 1}, {"min_p": 1.0}):
        sampled = generate_batch(model, tok, [PROMPT], max_tokens=5, temperature=1.5, seed=3, **kw)[0]
        assert sampled.token_ids == greedy.token_ids
    a = "".join(stream_generate(model, tok, PROMPT, max_tokens=6, temperature=1.0, top_k=20, min_p=0.05, seed=9))
    b = "".join(stream_generate(model, tok, PROMPT, max_tokens=6, temperature=1.0, top_k=20, min_p=0.05, seed=9))
    assert a == b


@pytest.mark.parametrize("kw", [{"top_k": -1}, {"min_p": 1.5}, {"min_p": -0.1}])
def test_bad_cuts_are_refused(smollm2, kw):
    model, tok = smollm2
    with pytest.raises(ValueError, match="top_k|min_p"):
        generate_batch(model, tok, [PROMPT], max_tokens=2, **kw)


def test_cli_mlx_lm_flag_names(smollm2, smollm2_path, tmp_path):
    """--adapter-path / --system-prompt / --top-k / --min-p (mlx_lm.generate's names) work; the old names stay
    as aliases and give the same answer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "run"))
    del base, lora
    common = ["generate", "--prompt", "Is the sky blue?", "--max-tokens", "5", "--temp", "0.7", "--seed", "1"]
    new = CliRunner().invoke(app, [*common, "--adapter-path", str(tmp_path / "run"), "--system-prompt",
                                   "Answer in one word.", "--top-k", "5", "--min-p", "0.1"])
    old = CliRunner().invoke(app, [*common, "--adapter", str(tmp_path / "run"), "--system", "Answer in one word.",
                                   "--top-k", "5", "--min-p", "0.1"])
    assert new.exit_code == 0, new.output
    assert old.exit_code == 0, old.output
    assert new.stdout.strip() and new.stdout == old.stdout
    bad = CliRunner().invoke(app, ["generate", "--prompt", "x", "--min-p", "2"])
    assert bad.exit_code == 2 and "--min-p" in bad.output
    raw = CliRunner().invoke(app, ["generate", "--prompt", "x", "--raw", "--system-prompt", "s"])
    assert raw.exit_code == 2 and "--system-prompt" in raw.output
