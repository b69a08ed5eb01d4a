"""Variable-length attention for packed rows: each sample attends only to itself (and a shared prefix).

A packed row run through plain SDPA with a block-diagonal mask computes the scores of every pair of
positions in the row and throws most of them away. Here the samples ("segments") of a batch are gathered
into a (segments x longest segment) tensor and attend causally to themselves in one batched call; with a shared
prompt prefix, each segment's keys are [prefix keys, own keys] and the prefix attends causally to itself
once. Outputs are scattered back into the row. Autograd flows through the gathers, so the prefix's keys and
values receive the sum of their segments' gradients: loss and gradients are those of running every sample
alone (tests/train/test_packing.py checks logits and gradients against that).

It is registered with transformers' `AttentionInterface` under `tickerpulse_varlen` and switched on for the
training model only. The batch layout reaches it as the `tp_layout` keyword that transformers passes from
the model's forward down to the attention function; a call without it (e.g. generation) falls back to SDPA.
Sliding-window layers (Gemma 3's local layers) pass their window, and a segment attends only to keys less
than a window behind it, counted in the positions it would have alone (prefix then own tokens): when the
prefix and the longest segment fit in the window, as chat samples usually do, nothing changes. Models with
attention-logit softcapping or bidirectional attention keep their own attention (the layout would bypass those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

NAME = "tickerpulse_varlen"
LAYOUT_KW = "tp_layout"
SEGMENT_MULTIPLE = 8  # segments are padded to a multiple of this (oneDNN builds a kernel per new shape)


def round_up(n: int, multiple: int) -> int:
    """Padded sizes: oneDNN compiles and keeps a kernel per new matmul shape, so fewer shapes = less of both."""
    return -(-n // multiple) * multiple


@dataclass
class Layout:
    """Where the segments of a micro-batch sit, as flat indices into (rows * width) positions."""

    prefix: torch.Tensor  # (p,) flat positions of the shared prefix (empty = none)
    query_index: torch.Tensor  # (K, n_max) flat positions of each segment's tokens (padded with 0)
    key_index: torch.Tensor  # (K, p + n_max) prefix positions then the segment's
    valid: torch.Tensor  # (K, n_max) bool, real tokens
    mask: torch.Tensor | None  # (K, 1, n_max, p + n_max) bool when p > 0; None = causal within each segment
    valid_flat: torch.Tensor | None = None  # (tokens,) positions of the real tokens in (K * n_max)

    def __post_init__(self) -> None:
        if self.valid_flat is None:
            self.valid_flat = self.valid.reshape(-1).nonzero().squeeze(1)

    def to(self, device: str | torch.device) -> "Layout":
        return Layout(self.prefix.to(device), self.query_index.to(device), self.key_index.to(device),
                      self.valid.to(device), None if self.mask is None else self.mask.to(device),
                      self.valid_flat.to(device))


def build_layout(segments: list[tuple[int, int]], prefix: tuple[int, int] | None) -> Layout:
    """segments: (flat start, length) of each sample's own tokens; prefix: (flat start, length) or None."""
    p_start, p = prefix if prefix else (0, 0)
    k = len(segments)
    n_max = round_up(max(n for _, n in segments), SEGMENT_MULTIPLE)
    ar = torch.arange(n_max)
    starts = torch.tensor([s for s, _ in segments])
    lengths = torch.tensor([n for _, n in segments])
    valid = ar[None, :] < lengths[:, None]
    query_index = torch.where(valid, starts[:, None] + ar[None, :], torch.zeros((), dtype=torch.long))
    prefix_index = torch.arange(p_start, p_start + p)
    key_index = torch.cat([prefix_index.expand(k, p), query_index], dim=1)
    mask = None
    if p:
        causal = torch.ones(n_max, n_max, dtype=torch.bool).tril()
        mask = torch.cat([torch.ones(n_max, p, dtype=torch.bool), causal], dim=1).expand(k, 1, n_max, p + n_max)
    return Layout(prefix_index, query_index, key_index, valid, mask)


def _segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       scale: float, dropout: float = 0.0) -> torch.Tensor:
    """Softmax attention of (K, H, n, D) queries over (K, H, m, D) keys, scores and softmax in fp32.

    Plain matmuls rather than SDPA: at these sizes (segments of ~100 tokens, 9 heads) CPU SDPA's flash kernel
    with a mask ran forward + backward ~1.4x slower in the real training step (and ~2x slower in bf16 alone).
    mask: (K, 1, n, m) bool, True = may attend; None = causal. Every query row sees at least one key (its
    own position or the prefix), so no row is fully masked.
    """
    scores = ((q * scale) @ k.transpose(-1, -2)).float()  # scaling q (K x n x D) is cheaper than the scores
    if mask is None:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    if dropout:
        probs = torch.nn.functional.dropout(probs, dropout)
    return probs.to(v.dtype) @ v


def window_mask(n: int, p: int, window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, p + n) bool: may query i of a segment (position p + i) attend to key j (prefix positions 0..p-1,
    then the segment's p..p+n-1)? Causal, and less than `window` positions back (transformers' sliding window:
    kv > q - window)."""
    q = torch.arange(p, p + n, device=device)[:, None]
    k = torch.arange(p + n, device=device)[None, :]  # prefix keys then the segment's: positions 0..p+n-1
    return (k <= q) & (k > q - window)


def varlen_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: (B, H, L, D) inputs -> ((B, L, H, D) output, None)."""
    layout: Layout | None = kwargs.pop(LAYOUT_KW, None)
    window: int | None = kwargs.get("sliding_window")
    if layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, h, length, d = query.shape
    hkv = key.shape[1]
    rep = h // hkv
    q = query.transpose(1, 2).reshape(b * length, h, d)
    k = key.transpose(1, 2).reshape(b * length, hkv, d)
    v = value.transpose(1, 2).reshape(b * length, hkv, d)
    # index_select, not advanced indexing: the backward of `x[index]` is a serial accumulating index_put
    # on CPU (~10x slower here; the prefix positions repeat in every segment's keys)
    kk, nq, nk = layout.query_index.shape[0], layout.query_index.shape[1], layout.key_index.shape[1]

    def gather(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:  # -> (K, heads, n, D)
        g = x.index_select(0, index.reshape(-1)).view(kk, n, x.shape[1], d).transpose(1, 2)
        return g.repeat_interleave(rep, dim=1) if x.shape[1] != h else g

    p = layout.prefix.numel()
    mask = layout.mask
    if window is not None and nk > window:  # some key (prefix + segment) lies a window or more behind its query
        mask = window_mask(nq, p, window, q.device).expand(kk, 1, nq, nk)
    qs, ks, vs = gather(q, layout.query_index, nq), gather(k, layout.key_index, nk), gather(v, layout.key_index, nk)
    seg = _segment_attention(qs, ks, vs, mask, scaling if scaling is not None else d ** -0.5, dropout)
    seg = seg.transpose(1, 2).reshape(kk * nq, h, d).index_select(0, layout.valid_flat)  # (tokens, H, D)
    index = layout.query_index.reshape(-1).index_select(0, layout.valid_flat)
    out = q.new_zeros(b * length, h, d)
    if layout.prefix.numel():
        pi = layout.prefix
        qp, kp, vp = (x.index_select(0, pi).transpose(0, 1)[None] for x in (q, k, v))  # (1, heads, p, D)
        if rep > 1:
            kp, vp = kp.repeat_interleave(rep, dim=1), vp.repeat_interleave(rep, dim=1)
        pre_mask = window_mask(p, 0, window, q.device) if window is not None and p > window else None
        pre = torch.nn.functional.scaled_dot_product_attention(qp, kp, vp, attn_mask=pre_mask, dropout_p=dropout,
                                                               scale=scaling, is_causal=pre_mask is None)
        out = out.index_copy(0, pi, pre[0].transpose(0, 1))
    out = out.index_copy(0, index, seg)
    return out.reshape(b, length, h, d), None


def _text_config(cfg: Any) -> Any:
    return getattr(cfg, "text_config", None) or cfg


def supports_varlen(causal_lm: Any, max_seq_length: int) -> bool:
    """Causal sdpa/eager models without attention softcapping; a sliding window shorter than the rows is fine
    when its layers pass it to the attention function (`sliding_window`, as Gemma 3's do), since varlen applies
    it per segment."""
    cfg = _text_config(getattr(causal_lm, "config", None))
    impl = getattr(cfg, "_attn_implementation", None)
    window = getattr(cfg, "sliding_window", None)
    window_ok = window is None or window >= max_seq_length or _passes_window(causal_lm)
    return (impl in ("sdpa", "eager", NAME) and window_ok and not getattr(cfg, "attn_logit_softcapping", None)
            and not getattr(cfg, "use_bidirectional_attention", False))


def _passes_window(causal_lm: Any) -> bool:
    """The attention modules hold their window as `sliding_window` and pass it to the attention function
    (Gemma 3, Qwen 2); a model whose window lives only in its config (Mistral reads `config.sliding_window`
    at call time) keeps its own attention."""
    windows = [getattr(m, "sliding_window", None) for name, m in causal_lm.named_modules()
               if name.endswith("self_attn")]
    return bool(windows) and any(w is not None for w in windows)


def enable_varlen(causal_lm: Any, max_seq_length: int) -> bool:
    """Switch `causal_lm` to varlen attention when it supports it; returns whether it did."""
    if not supports_varlen(causal_lm, max_seq_length):
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
    causal_lm.set_attn_implementation(NAME)
    return _text_config(causal_lm.config)._attn_implementation == NAME


def uses_varlen(causal_lm: Any) -> bool:
    return _text_config(getattr(causal_lm, "config", None))._attn_implementation == NAME
