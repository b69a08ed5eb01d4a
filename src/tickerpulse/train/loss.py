"""The training/evaluation loss: next-token cross-entropy summed over trained positions only.

Logits are computed only where a target exists (`hidden[targets != IGNORE] @ lm_head`): with prompt masking
most positions of a chat sample are prompt, so this skips most of the vocabulary projection and its backward,
and never materialises a `tokens x vocab` logits tensor for the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tickerpulse.train.attention import LAYOUT_KW, uses_varlen
from tickerpulse.train.collate import IGNORE
from tickerpulse.train.packing import Batch


def decoder_and_head(causal_lm: Any) -> tuple[Any, Any]:
    """(decoder stack returning hidden states, output projection) of an HF causal LM."""
    decoder = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.model
    return decoder, causal_lm.get_output_embeddings()


def supports_explicit_mask(causal_lm: Any, max_seq_length: int) -> bool:
    """Whether a shared-prefix row's 4-D mask can be handed to this model unchanged.

    Yes for sdpa/eager attention without a sliding window shorter than the rows (a 4-D mask replaces the
    model's own mask, sliding window included).
    """
    cfg = getattr(causal_lm, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    impl = getattr(cfg, "_attn_implementation", None)
    window = getattr(cfg, "sliding_window", None)
    return impl in ("sdpa", "eager") and (window is None or window >= max_seq_length)


def _model_mask(causal_lm: Any, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    cfg = causal_lm.config
    impl = getattr(getattr(cfg, "text_config", None) or cfg, "_attn_implementation", "sdpa")
    if impl == "eager":  # eager attention adds the mask to the scores
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask  # sdpa: boolean, True = may attend


HEAD_CHUNK = 128  # target positions per chunk of the fused head + cross-entropy


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    """sum_i w_i * CE(h_i @ W^T, t_i) for a frozen, bias-free output projection W, in chunks of rows.

    The gradient w.r.t. h is known in the forward pass (w * (softmax - onehot) @ W), so each chunk's
    `rows x vocab` logits live only inside the loop: no full logits tensor, no separate log-softmax
    backward and zero-filled gradient (on a 49k vocabulary these passes were ~5% of a training step).
    Same arithmetic as the unfused path: logits in W's dtype, softmax and loss in fp32.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor | None) -> torch.Tensor:
        total = hidden.new_zeros((), dtype=torch.float32)
        grad = torch.empty_like(hidden) if hidden.requires_grad else None
        for i in range(0, hidden.shape[0], HEAD_CHUNK):
            logits = (hidden[i : i + HEAD_CHUNK] @ weight.T).float()
            t = targets[i : i + HEAD_CHUNK]
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - logits.gather(1, t[:, None]).squeeze(1)
            w = None if weights is None else weights[i : i + HEAD_CHUNK].float()
            total += (ce if w is None else ce * w).sum()
            if grad is not None:
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                if w is not None:
                    probs.mul_(w[:, None])
                grad[i : i + HEAD_CHUNK] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return (None if grad is None else grad * grad_out.to(grad.dtype)), None, None, None


def _logit_softcap(causal_lm: Any) -> float | None:
    return getattr(getattr(causal_lm, "config", None), "final_logit_softcapping", None)


def _fusable_head(causal_lm: Any, head: Any) -> bool:
    """A frozen plain nn.Linear (not a subclass) without bias or logit softcapping: the fused loss applies."""
    return (type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
            and not _logit_softcap(causal_lm))


def _target_hidden(causal_lm: Any, batch: Batch) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """(last hidden states of the whole batch, output projection, mask of the positions that have a target)."""
    decoder, head = decoder_and_head(causal_lm)
    if uses_varlen(causal_lm):
        if batch.layout is None:
            raise ValueError("the model uses varlen attention: build batches with make_batch(..., varlen=True)")
        hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=None,
                         use_cache=False, **{LAYOUT_KW: batch.layout}).last_hidden_state
    else:
        dtype = next(causal_lm.parameters()).dtype
        hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                         attention_mask=_model_mask(causal_lm, batch.mask, dtype), use_cache=False).last_hidden_state
    return hidden, head, batch.targets != IGNORE


@torch.no_grad()
def token_losses(causal_lm: Any, batch: Batch) -> torch.Tensor:
    """Unweighted fp32 cross-entropy of every trained position, in target order (evaluation only).

    Validation needs more than one weighted sum: the loss of the `token_weights` positions alone (the
    label fast mode reads) is a separate early-stopping metric. Same arithmetic as `batch_loss`; soft-target
    terms are left out (a validation answer is scored on its own tokens).
    """
    hidden, head, keep = _target_hidden(causal_lm, batch)
    h, t = hidden[keep], batch.targets[keep]
    cap = _logit_softcap(causal_lm)
    out = [h.new_zeros(0, dtype=torch.float32)]
    for i in range(0, h.shape[0], HEAD_CHUNK):
        logits = head(h[i : i + HEAD_CHUNK]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        out.append(F.cross_entropy(logits, t[i : i + HEAD_CHUNK], reduction="none"))
    return torch.cat(out)


def _loss_rows(hidden: torch.Tensor, keep: torch.Tensor, batch: Batch
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(hidden states, targets, weights or None) of every loss term: the trained positions, then the batch's
    soft-target terms (`also_*`, packing.py), which reuse a trained position's hidden state with another token."""
    h, t = hidden[keep], batch.targets[keep]
    w = None if batch.weights is None else batch.weights[keep]
    if batch.also_index is None:
        return h, t, w
    assert batch.also_targets is not None and batch.also_weights is not None
    w = torch.ones(t.shape, dtype=torch.float32, device=t.device) if w is None else w
    return (torch.cat([h, hidden.reshape(-1, hidden.shape[-1])[batch.also_index]]),
            torch.cat([t, batch.also_targets]), torch.cat([w, batch.also_weights]))


def batch_loss(causal_lm: Any, batch: Batch) -> torch.Tensor:
    """Sum of (weighted) token cross-entropies over the trained positions and soft-target terms (divide by
    `batch.weight_total`).

    With varlen attention (the training default) the batch's segment layout goes to the attention function.
    Otherwise, plain packed rows rely on `attention_mask=None` + reset `position_ids` + `use_cache=False`, from
    which transformers builds a block-diagonal mask (see packing.py); shared-prefix rows bring a 4-D mask.
    """
    hidden, head, keep = _target_hidden(causal_lm, batch)
    h, targets, weights = _loss_rows(hidden, keep, batch)
    if _fusable_head(causal_lm, head):
        return _FrozenHeadCrossEntropy.apply(h, head.weight, targets, weights)
    logits = head(h).float()
    cap = _logit_softcap(causal_lm)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if weights is None:
        return F.cross_entropy(logits, targets, reduction="sum")
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()
