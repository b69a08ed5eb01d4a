"""The fused frozen-head cross-entropy equals the plain `head(h) -> cross_entropy` path, value and gradient,
across chunk boundaries and with token weights; batch_loss takes it only for a frozen bias-free head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tickerpulse.train import loss as loss_mod
from tickerpulse.train.loss import _FrozenHeadCrossEntropy, _fusable_head


def reference(hidden, weight, targets, weights):
    ce = F.cross_entropy((hidden @ weight.T).float(), targets, reduction="none")
    return ce.sum() if weights is None else (ce * weights).sum()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_head_loss_and_gradient_match_the_plain_path(weighted, dtype, tol):
    g = torch.Generator().manual_seed(0)
    n, d, vocab = loss_mod.HEAD_CHUNK * 2 + 37, 48, 1000  # three chunks, the last one partial
    weight = (torch.randn(vocab, d, generator=g) * 0.2).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=g)
    weights = torch.where(torch.rand(n, generator=g) < 0.1, 8.0, 1.0) if weighted else None
    h_ref = torch.randn(n, d, generator=g).to(dtype).requires_grad_(True)
    h_fused = h_ref.detach().clone().requires_grad_(True)

    ref = reference(h_ref, weight, targets, weights)
    fused = _FrozenHeadCrossEntropy.apply(h_fused, weight, targets, weights)
    (ref * 0.5).backward()
    (fused * 0.5).backward()  # the upstream gradient is applied
    assert fused.item() == pytest.approx(ref.item(), rel=tol)
    assert fused.dtype == torch.float32
    assert torch.allclose(h_fused.grad.float(), h_ref.grad.float(), rtol=tol, atol=tol * 1e-2)


def test_no_gradient_work_without_grad():
    weight, h = torch.randn(50, 8), torch.randn(5, 8)
    with torch.no_grad():
        out = _FrozenHeadCrossEntropy.apply(h, weight, torch.arange(5), None)
    assert out.item() == pytest.approx(reference(h, weight, torch.arange(5), None).item(), rel=1e-5)


def test_only_a_frozen_bias_free_linear_head_is_fused():
    head = torch.nn.Linear(8, 50, bias=False)
    model = torch.nn.Module()
    assert not _fusable_head(model, head)  # trainable (full fine-tuning of the head): plain path
    head.weight.requires_grad_(False)
    assert _fusable_head(model, head)
    assert not _fusable_head(model, torch.nn.Linear(8, 50).requires_grad_(False))  # bias
    model.config = type("C", (), {"final_logit_softcapping": 30.0})()
    assert not _fusable_head(model, head)  # softcapping (Gemma 2)
