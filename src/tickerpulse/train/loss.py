"""The training/evaluation loss: next-token cross-entropy summed over trained positions only.

Logits are computed only where a target exists (`hidden[targets != IGNORE] @ lm_head`): with prompt masking
most positions of a chat sample are prompt, so this skips most of the vocabulary projection and its backward,
and never materialises a `tokens x vocab` logits tensor for the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tickerpulse.train.collate import IGNORE
from tickerpulse.train.packing import Batch


def decoder_and_head(causal_lm: Any) -> tuple[Any, Any]:
    """(decoder stack returning hidden states, output projection) of an HF causal LM."""
    decoder = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.model
    return decoder, causal_lm.get_output_embeddings()


def batch_loss(causal_lm: Any, batch: Batch) -> torch.Tensor:
    """Sum of token cross-entropies over the batch's trained positions (divide by `batch.n_targets`).

    `attention_mask=None` + reset `position_ids` + `use_cache=False` is what makes transformers build a
    block-diagonal mask for packed rows (see packing.py).
    """
    decoder, head = decoder_and_head(causal_lm)
    hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=None,
                     use_cache=False).last_hidden_state
    keep = batch.targets != IGNORE
    logits = head(hidden[keep]).float()
    cap = getattr(getattr(causal_lm, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, batch.targets[keep], reduction="sum")
