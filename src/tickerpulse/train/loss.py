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


def batch_loss(causal_lm: Any, batch: Batch) -> torch.Tensor:
    """Sum of (weighted) token cross-entropies over the trained positions (divide by `batch.weight_total`).

    With varlen attention (the training default) the batch's segment layout goes to the attention function.
    Otherwise, plain packed rows rely on `attention_mask=None` + reset `position_ids` + `use_cache=False`, from
    which transformers builds a block-diagonal mask (see packing.py); shared-prefix rows bring a 4-D mask.
    """
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
    keep = batch.targets != IGNORE
    logits = head(hidden[keep]).float()
    cap = getattr(getattr(causal_lm, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if batch.weights is None:
        return F.cross_entropy(logits, batch.targets[keep], reduction="sum")
    ce = F.cross_entropy(logits, batch.targets[keep], reduction="none")
    return (ce * batch.weights[keep]).sum()
