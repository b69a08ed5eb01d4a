"""Packing: rows respect max_seq_length, targets never cross samples, and samples in one packed row cannot
see each other -- proved on the real SmolLM2 forward pass for both attention paths (transformers' mask from
reset position ids, and our varlen attention), with a negative control that shows the test would catch a
leak; a shared prompt prefix gives the same logits, loss and gradients as running each sample alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tickerpulse.models.loading import load_tokenizer
from tickerpulse.train.attention import LAYOUT_KW, NAME, enable_varlen, uses_varlen
from tickerpulse.train.collate import IGNORE, Encoder, Sample
from tickerpulse.train.loss import batch_loss
from tickerpulse.train.packing import BatchPlan, eval_batches, make_batch, pack_rows, padding_waste


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def base_model(smollm2_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()


def _attention(model, path: str):
    if path == "varlen":
        assert enable_varlen(model, 4096) and model.config._attn_implementation == NAME
    else:
        model.set_attn_implementation("sdpa")
    return model


@pytest.fixture(params=["sdpa-mask", "varlen"])
def model_and_tok(request, base_model, smollm2_path):
    """SmolLM2 with transformers' own packed-mask attention, or with our varlen attention."""
    return _attention(base_model, request.param), load_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def tiny_base(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(params=["sdpa-mask", "varlen"])
def tiny_and_tok(request, tiny_base, tiny_model, one_thread):
    """The small Llama (same code paths, SmolLM2 tokenizer) for the costlier exactness checks."""
    return _attention(tiny_base, request.param), load_tokenizer(tiny_model)


@pytest.fixture
def smollm2_varlen(base_model, smollm2_path):
    return _attention(base_model, "varlen"), load_tokenizer(smollm2_path)


def encode(tok, rows):
    enc = Encoder(tok, max_seq_length=256)
    return [enc.encode(r, "chat") for r in rows]


def test_pack_rows_first_fit_decreasing():
    lengths = [50, 30, 70, 20, 10, 60]
    rows = pack_rows(lengths, 100)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 100 for r in rows)
    assert rows[0][0] == 2 and rows[1][0] == 5  # longest first
    assert len(rows) == 3  # 270 tokens need at least 3 rows of 100


def test_targets_are_shifted_within_each_sample():
    a = Sample([10, 11, 12, 13], [IGNORE, IGNORE, 12, 13])
    b = Sample([20, 21, 22], [20, 21, 22])
    batch = make_batch([a, b], [0, 1], max_seq_length=16, pad_id=0)
    assert batch.input_ids.shape == (1, 7)
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    # a's last token predicts nothing (not b's first token); b's first label has no predecessor in b
    assert batch.targets.tolist() == [[IGNORE, 12, 13, IGNORE, 21, 22, IGNORE]]
    assert batch.n_targets == 4 and batch.n_tokens == 7 and batch.n_pad == 0
    # two rows when they do not fit together; the short row is padded with its own position block
    split = make_batch([a, b], [0, 1], max_seq_length=5, pad_id=0)
    assert split.input_ids.shape == (2, 4) and split.n_pad == 1
    assert split.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0]]
    assert padding_waste([split]) == pytest.approx(1 / 8)


def test_batch_plan_is_a_pure_function_of_seed_and_index():
    plan, again = BatchPlan(10, 3, seed=7), BatchPlan(10, 3, seed=7)
    assert plan.per_epoch == 3
    epoch0 = [plan.indices(k) for k in range(3)]
    assert [again.indices(k) for k in (2, 0, 1)] == [epoch0[2], epoch0[0], epoch0[1]]
    assert len({i for b in epoch0 for i in b}) == 9  # without replacement within an epoch
    assert plan.indices(3) != epoch0[0]  # the next epoch is reshuffled
    assert BatchPlan(10, 3, seed=8).indices(0) != epoch0[0] or BatchPlan(10, 3, seed=8).indices(1) != epoch0[1]
    assert eval_batches(10, 4, -1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert eval_batches(10, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def batch_of(model, samples, order, **kwargs):
    return make_batch(samples, order, max_seq_length=4096, pad_id=0, varlen=uses_varlen(model), **kwargs)


def forward_logits(model, batch, **kwargs):
    """All-position logits of a batch through whichever attention path the model uses."""
    extra = {LAYOUT_KW: batch.layout} if uses_varlen(model) else {"attention_mask": batch.mask}
    extra.update(kwargs)
    with torch.no_grad():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **extra).logits


def per_sample(model, samples, order, **kwargs):
    """Pack samples[order] (sharing a prefix if asked); return {sample index: logits over the whole sample}."""
    batch = batch_of(model, samples, order, share_prefix=kwargs.pop("share_prefix", False))
    logits = forward_logits(model, batch, **kwargs)
    p, out = batch.prefix_len, {}
    for r, row in enumerate(batch.rows):
        at = p
        for k in row:
            n = len(samples[k]) - p
            out[k] = torch.cat([logits[r, :p], logits[r, at : at + n]])
            at += n
    return out


def test_changing_one_packed_sample_leaves_the_others_unchanged(model_and_tok):
    model, tok = model_and_tok
    samples = encode(tok, [
        chat("$AAPL beats estimates, raises guidance", '{"sentiment": "positive"}'),
        chat("$TSLA recalls 2 million cars", '{"sentiment": "negative"}'),
        chat("$MSFT to hold annual meeting", '{"sentiment": "neutral"}'),
    ])
    changed = samples[:1] + encode(tok, [chat("Oil slumps as OPEC output rises; airlines rally hard", "mixed")]) \
        + samples[2:]
    before = per_sample(model, samples, [0, 1, 2])
    after = per_sample(model, changed, [0, 1, 2])
    assert len(batch_of(model, samples, [0, 1, 2]).rows) == 1  # really one packed row
    assert len(changed[1]) != len(samples[1])  # the change also moves the third sample's offset
    torch.testing.assert_close(after[0], before[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(after[2], before[2], atol=1e-4, rtol=0)  # the sample *after* the change
    assert not torch.allclose(after[1][-3:], before[1][-3:], atol=1e-2)
    # and each packed sample equals the same sample run alone (positions restart per sample)
    for k in range(3):
        torch.testing.assert_close(before[k], per_sample(model, samples, [k])[k], atol=1e-4, rtol=0)


def test_negative_control_a_2d_mask_would_leak(base_model, smollm2_path):
    """With a 2-D attention mask transformers skips packed-sequence detection: samples see each other.
    This is why the loop never passes one; the test above would fail on such a leak."""
    base_model.set_attn_implementation("sdpa")
    tok = load_tokenizer(smollm2_path)
    samples = encode(tok, [chat("$AAPL up", "positive"), chat("$TSLA down", "negative")])
    changed = encode(tok, [chat("$NVDA soars on AI demand", "positive"), chat("$TSLA down", "negative")])
    ones = lambda ss: torch.ones(1, len(ss[0]) + len(ss[1]), dtype=torch.long)  # noqa: E731
    leak_before = per_sample(base_model, samples, [0, 1], attention_mask=ones(samples))[1]
    leak_after = per_sample(base_model, changed, [0, 1], attention_mask=ones(changed))[1]
    assert not torch.allclose(leak_before, leak_after, atol=1e-3)


def test_packed_loss_equals_sum_of_per_sample_losses(tiny_and_tok):
    model, tok = tiny_and_tok
    samples = encode(tok, [chat("$AAPL up", '{"sentiment": "positive"}'),
                           chat("$TSLA recalls cars", '{"sentiment": "negative"}'),
                           chat("$F flat", '{"sentiment": "neutral"}')])
    with torch.no_grad():
        packed = batch_loss(model, batch_of(model, samples, [0, 1, 2]))
        single = sum(batch_loss(model, batch_of(model, samples, [k])) for k in range(3))
        unpacked = batch_loss(model, batch_of(model, samples, [0, 1, 2], packing=False))
    assert packed.item() == pytest.approx(single.item(), rel=1e-5)
    assert unpacked.item() == pytest.approx(single.item(), rel=1e-5)  # padding rows are isolated too
    assert np.isfinite(packed.item())


def sentiment_samples(tok, texts):
    from tickerpulse.task.contract import build_messages, format_answer

    rows = [{"messages": build_messages(t, tk) + [{"role": "assistant", "content": format_answer(tk, lab, sc)}]}
            for t, tk, lab, sc in texts]
    return encode(tok, rows)


TEXTS = [("$AAPL beats estimates and raises guidance", "AAPL", "positive", 0.7),
         ("$TSLA recalls 2 million cars over autopilot", "TSLA", "negative", -0.7),
         ("$MSFT to hold its annual meeting on Dec 1", "MSFT", "neutral", 0.0)]


def test_shared_prompt_prefix_is_exact_and_isolated(tiny_and_tok):
    check_shared_prefix(*tiny_and_tok)


def test_shared_prompt_prefix_on_smollm2_with_varlen(smollm2_varlen):
    check_shared_prefix(*smollm2_varlen)


def check_shared_prefix(model, tok):
    samples = sentiment_samples(tok, TEXTS)
    batch = batch_of(model, samples, [0, 1, 2], share_prefix=True)
    p = batch.prefix_len
    assert p >= 100 and len(batch.rows) == 1  # the system prompt and more
    assert (batch.layout is not None) == uses_varlen(model) and (batch.mask is None) == uses_varlen(model)
    assert batch.n_computed == sum(len(s) for s in samples) - 2 * p and batch.n_tokens == sum(map(len, samples))
    shared = per_sample(model, samples, [0, 1, 2], share_prefix=True)
    for k in range(3):
        torch.testing.assert_close(shared[k], per_sample(model, samples, [k])[k], atol=1e-4, rtol=0)
    changed = samples[:1] + sentiment_samples(tok, [("Oil slumps as OPEC output rises; airlines rally", "DAL",
                                                     "positive", 0.4)]) + samples[2:]
    after = per_sample(model, changed, [0, 1, 2], share_prefix=True)
    torch.testing.assert_close(after[0], shared[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(after[2], shared[2], atol=1e-4, rtol=0)


def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_and_tok):
    model, tok = tiny_and_tok
    samples = sentiment_samples(tok, TEXTS)
    params = [model.model.layers[0].self_attn.k_proj.weight, model.model.layers[-1].mlp.down_proj.weight]
    grads = {}
    for share in (False, True):
        for prm in params:
            prm.requires_grad_(True)
            prm.grad = None
        batch = make_batch(samples, [0, 1, 2], max_seq_length=400, pad_id=0, share_prefix=share,
                           varlen=uses_varlen(model))
        assert (batch.prefix_len > 0) == share
        loss = batch_loss(model, batch)
        loss.backward()
        grads[share] = (loss.item(), [prm.grad.clone() for prm in params])
        for prm in params:
            prm.requires_grad_(False)
            prm.grad = None
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-5)
    for g_shared, g_plain in zip(grads[True][1], grads[False][1]):
        assert (g_shared - g_plain).abs().max() <= 1e-4 * g_plain.abs().max() + 1e-7


def test_no_prefix_sharing_when_the_prefix_would_carry_loss(smollm2_path):
    from tickerpulse.task.contract import build_messages

    tok = load_tokenizer(smollm2_path)
    plain = Encoder(tok, mask_prompt=False, max_seq_length=512)
    rows = [{"messages": build_messages(t, tk) + [{"role": "assistant", "content": lab}]} for t, tk, lab, _ in TEXTS]
    samples = [plain.encode(r, "chat") for r in rows]
    batch = make_batch(samples, [0, 1, 2], max_seq_length=2048, pad_id=0, share_prefix=True, varlen=True)
    assert batch.prefix_len == 0 and batch.mask is None and batch.layout is not None


@pytest.mark.parametrize("share", [False, True])
def test_token_weights_follow_their_targets_and_scale_the_loss(share):
    p = list(range(1, 21))  # a shared prompt prefix (MIN_SHARED_PREFIX tokens or more)
    a = Sample(p + [30, 31, 32], [IGNORE] * 21 + [31, 32], weights=(1.0,) * 21 + (5.0, 1.0))
    b = Sample(p + [40, 41], [IGNORE] * 21 + [41])
    batch = make_batch([a, b], [0, 1], max_seq_length=64, pad_id=0, share_prefix=share)
    assert (batch.prefix_len > 0) == share
    keep = batch.targets != IGNORE
    # a's token 11 (weight 5) is the target at the position before it; everything else weighs 1
    assert sorted(batch.weights[keep].tolist()) == [1.0, 1.0, 5.0]
    assert batch.targets[batch.weights == 5.0].tolist() == [31]
    assert batch.n_targets == 3 and batch.weight_total == 7.0
    plain = make_batch([b], [0], max_seq_length=64, pad_id=0)
    assert plain.weights is None and plain.weight_total == plain.n_targets == 1
    assert batch.to("cpu").weights is not None and batch.to("cpu").weight_total == 7.0


def test_weighted_loss_is_the_weighted_sum_of_per_token_losses(tiny_and_tok):
    model, tok = tiny_and_tok
    rows = [chat("$AAPL up", '{"sentiment": "positive"}'), chat("$TSLA recalls cars", '{"sentiment": "negative"}')]
    plain = encode(tok, rows)
    heavy = [Encoder(tok, max_seq_length=256, token_weights=[('"sentiment": "', 4.0)]).encode(r, "chat") for r in rows]
    with torch.no_grad():
        b_plain, b_heavy = batch_of(model, plain, [0, 1]), batch_of(model, heavy, [0, 1])
        per_token = torch.nn.functional.cross_entropy(
            forward_logits(model, b_plain)[b_plain.targets != IGNORE].float(),
            b_plain.targets[b_plain.targets != IGNORE], reduction="none")
        w = b_heavy.weights[b_heavy.targets != IGNORE]
        assert (w == 4.0).sum() == 2 and b_heavy.weight_total == pytest.approx(b_plain.n_targets + 6)
        assert batch_loss(model, b_heavy).item() == pytest.approx((per_token * w).sum().item(), rel=1e-4)
        assert batch_loss(model, b_plain).item() == pytest.approx(per_token.sum().item(), rel=1e-4)


MANY = TEXTS + [("Oil slumps as OPEC output rises; airlines rally on cheaper jet fuel", "DAL", "positive", 0.4),
                ("$NVDA", "NVDA", "neutral", 0.0),
                ("$BA shares fall after another delivery halt; analysts cut targets across the board and warn on "
                 "cash flow for the rest of the year", "BA", "negative", -0.6),
                ("$GME squeezes again", "GME", "positive", 0.3),
                ("$JPM to report earnings on Friday before the bell", "JPM", "neutral", 0.0),
                ("$XOM cuts dividend", "XOM", "negative", -0.5)]


def test_many_segments_of_different_lengths_are_exact(tiny_and_tok):
    """9 samples of very different lengths (varlen pads every segment to the longest): every sample's logits
    equal running it alone, and loss and gradients equal the unshared batch."""
    model, tok = tiny_and_tok
    samples = sentiment_samples(tok, MANY)
    order = list(range(len(samples)))
    batch = batch_of(model, samples, order, share_prefix=True)
    assert batch.prefix_len >= 100 and len(batch.rows) == 1
    shared = per_sample(model, samples, order, share_prefix=True)
    for k in order:
        torch.testing.assert_close(shared[k], per_sample(model, samples, [k])[k], atol=1e-4, rtol=0)
    prm = model.model.layers[0].self_attn.k_proj.weight
    result = {}
    for share in (False, True):
        prm.requires_grad_(True)
        prm.grad = None
        loss = batch_loss(model, make_batch(samples, order, max_seq_length=4096, pad_id=0, share_prefix=share,
                                            varlen=uses_varlen(model)))
        loss.backward()
        result[share] = (loss.item(), prm.grad.clone())
        prm.requires_grad_(False)
        prm.grad = None
    assert result[True][0] == pytest.approx(result[False][0], rel=1e-5)
    assert (result[True][1] - result[False][1]).abs().max() <= 1e-4 * result[False][1].abs().max() + 1e-7


def test_length_grouped_batches_see_every_sample_once_per_epoch_in_similar_length_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 200, size=203).tolist()
    plan = BatchPlan(203, 8, seed=5, lengths=lengths, group=5)
    plain = BatchPlan(203, 8, seed=5)
    epoch = [plan.indices(k) for k in range(plan.per_epoch)]
    assert plan.per_epoch == 25 and len({i for b in epoch for i in b}) == 200  # without replacement
    assert [BatchPlan(203, 8, seed=5, lengths=lengths, group=5).indices(k) for k in (3, 0)] == [epoch[3], epoch[0]]

    def spread(p: BatchPlan) -> float:  # mean (longest - shortest) within a batch
        return float(np.mean([np.ptp([lengths[i] for i in p.indices(k)]) for k in range(p.per_epoch)]))

    assert spread(plan) < 0.5 * spread(plain)
    firsts = [lengths[b[0]] for b in epoch]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # batch order is shuffled
    assert plan.indices(25) != epoch[0]  # the next epoch regroups
    assert BatchPlan(203, 8, seed=5, lengths=lengths, group=1).indices(0) == plain.indices(0)  # group 1 = off


@pytest.mark.parametrize("share", [False, True])
def test_soft_target_terms_point_at_their_label_position(share):
    p = list(range(1, 21))
    a = Sample(p + [30, 31, 32], [IGNORE] * 21 + [31, 32], weights=(1.0,) * 21 + (5.0, 1.0), also=((21, 77, 2.5),))
    b = Sample(p + [40, 41], [IGNORE] * 21 + [41])
    batch = make_batch([b, a], [0, 1], max_seq_length=64, pad_id=0, share_prefix=share)
    flat = batch.targets.reshape(-1)
    # the term's position is the one whose target is a's weighted token 31 (weight 5): same hidden state
    (pos,) = batch.also_index.tolist()
    assert flat[pos].item() == 31 and batch.weights.reshape(-1)[pos].item() == 5.0
    assert batch.also_targets.tolist() == [77] and batch.also_weights.tolist() == [2.5]
    assert batch.weight_total == 9.5 and batch.n_targets == 3
    moved = batch.to("cpu")
    assert moved.also_index.tolist() == [pos] and moved.weight_total == 9.5
    assert make_batch([b], [0], max_seq_length=64, pad_id=0).also_index is None


def test_soft_target_loss_adds_the_other_tokens_cross_entropy(tiny_and_tok):
    """loss(soft) = loss(hard) + sum over terms of weight x CE(other token) at the label's position: the
    position's target is the distribution proportional to onehot(label) + sum ratio x onehot(other)."""
    model, tok = tiny_and_tok
    rows = [chat("$AAPL up a bit", '{"sentiment": "positive"}'), chat("$TSLA recalls cars", '{"sentiment": "negative"}')]
    enc = Encoder(tok, max_seq_length=256, token_weights=[('"sentiment": "', 4.0)])
    hard = [enc.encode(r, "chat") for r in rows]
    soft = [enc.encode({**rows[0], "soft_target": {"after": '"sentiment": "', "also": {"neutral": 0.5}}}, "chat"),
            hard[1]]
    with torch.no_grad():
        b_hard, b_soft = batch_of(model, hard, [0, 1]), batch_of(model, soft, [0, 1])
        logits = forward_logits(model, b_hard).float().reshape(-1, model.config.vocab_size)
        (pos,) = b_soft.also_index.tolist()
        ce_other = torch.nn.functional.cross_entropy(logits[pos], b_soft.also_targets[0]).item()
        assert b_soft.weight_total == pytest.approx(b_hard.weight_total + 2.0)
        assert batch_loss(model, b_soft).item() == pytest.approx(batch_loss(model, b_hard).item() + 2.0 * ce_other,
                                                                 rel=1e-4)
    # and the gradient flows into the label position's hidden state through both terms
    model.zero_grad(set_to_none=True)
    batch_loss(model, b_soft).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def tiny_gemma3(smollm2_path):
    """A small randomly initialised Gemma 3 text model (local sliding-window layers and a global one) with
    SmolLM2's tokenizer: Gemma 3's own attention code, its window passed to the attention function."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                           sliding_window=16, max_position_embeddings=4096,
                           layer_types=["sliding_attention"] * 3 + ["full_attention"])
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).float().eval()
    model.set_attn_implementation("sdpa")
    return model, load_tokenizer(smollm2_path)


@pytest.mark.parametrize("window", [16, 200])
def test_varlen_applies_a_sliding_window_exactly(tiny_gemma3, window, one_thread):
    """Gemma 3's local layers see only keys less than a window back. Varlen with a shared prefix gives each
    sample the logits it gets alone through transformers' own sliding-window attention: a window shorter
    than the prefix (16 of ~125 tokens) and one between the prefix and prefix + sample (200)."""
    import copy

    model, tok = tiny_gemma3
    model = copy.deepcopy(model)
    for layer in model.model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = window
    model.config.sliding_window = window
    samples = sentiment_samples(tok, MANY)
    alone = {}
    with torch.no_grad():
        for k, s in enumerate(samples):
            alone[k] = model(input_ids=torch.tensor([s.input_ids]), use_cache=False).logits[0]
    assert enable_varlen(model, 1024) and uses_varlen(model)
    order = list(range(len(samples)))
    batch = batch_of(model, samples, order, share_prefix=True)
    assert batch.prefix_len > 16 and max(len(s) for s in samples) > 200 >= batch.prefix_len
    shared = per_sample(model, samples, order, share_prefix=True)
    for k in order:
        torch.testing.assert_close(shared[k], alone[k], atol=1e-4, rtol=0)
    full = copy.deepcopy(model)  # negative control: without the window the answer differs
    for layer in full.model.layers:
        layer.self_attn.sliding_window = None
    assert not torch.allclose(per_sample(full, samples, [4])[4], alone[4], atol=1e-4)
