"""Batches: samples packed into rows of at most `max_seq_length` tokens, with no attention across samples.

`batch_size` counts samples (as in mlx-lm), so packing changes only how much is computed, never which
samples make up an optimizer step. Within a batch, samples are packed first-fit-decreasing into rows; rows
are padded to the longest row.

Isolation, plain packing: every sample's `position_ids` restart at 0 and the model is called with
`attention_mask=None` and `use_cache=False`; transformers then derives a block-diagonal causal mask from the
position resets (`masking_utils.find_packed_sequence_indices`). With a cache or a 2-D attention mask it would
not, and samples would silently attend to each other (tests/train/test_packing.py proves they do not).
Padding forms its own block. Targets are shifted *within* each sample, so the last token of one sample never
learns to predict the first token of the next.

Shared prompt prefix (`share_prefix`): when the samples of a batch start with the same untrained tokens
(the task's system prompt, here ~110 of ~200 tokens per sample), a row holds that prefix once followed by
several samples' remainders: `[prefix][rest 1][rest 2]...`. Each remainder continues the prefix's positions
and attends to the prefix and causally to itself only (an explicit 4-D mask), so every sample sees exactly
the attention and positions it would see alone and the loss and gradients are those of the unshared batch
(the prefix's gradient is the sum over its samples), while the prefix is computed once per row instead of
once per sample. It applies only when no trained token lies in the prefix or is predicted from its last
token; otherwise rows are packed plainly. `Batch.n_tokens` counts the samples' tokens (what was trained
on); `n_computed` the positions actually run through the model.

Soft targets (`Sample.also`, collate.py's `soft_target`): extra (position, token, weight) terms are listed
as flat indices into the batch's R x L positions (`also_index`) with their tokens and weights; the loss adds
them to the trained positions' terms, and `weight_total` counts them.

Data order is a pure function of (seed, micro-batch index): epoch e uses the permutation
`numpy.random.default_rng([seed, e])`, so resuming needs only the step count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tickerpulse.train.attention import Layout, build_layout, round_up
from tickerpulse.train.collate import IGNORE, Sample

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth an explicit mask
VARLEN_WIDTH_MULTIPLE = 64  # varlen rows are padded to a multiple of this: few distinct matmul shapes


@dataclass
class Batch:
    """Model inputs for one micro-batch (R rows x L tokens)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor  # next-token targets, IGNORE where nothing is trained (and at sample ends)
    rows: list[list[int]]  # sample indices per row, in order
    n_tokens: int  # tokens of the samples in the batch (a shared prefix counts once per sample)
    n_targets: int  # trained tokens
    n_computed: int = -1  # non-pad positions computed (< n_tokens when a prefix is shared)
    mask: torch.Tensor | None = None  # (R, 1, L, L) bool, True = may attend; None = derived from position_ids
    prefix_len: int = 0  # shared prefix length (0 = plain packing)
    layout: Layout | None = None  # segments for varlen attention (attention.py); replaces `mask`
    weights: torch.Tensor | None = None  # loss weight per target position (float); None = all 1
    weight_total: float = -1.0  # sum of the weights of the trained targets and `also` terms (= n_targets when unweighted)
    also_index: torch.Tensor | None = None  # flat positions (row * L + column) of extra soft-target terms
    also_targets: torch.Tensor | None = None  # their tokens
    also_weights: torch.Tensor | None = None  # their weights

    def __post_init__(self) -> None:
        if self.n_computed < 0:
            self.n_computed = self.n_tokens
        if self.weight_total < 0:
            self.weight_total = float(self.n_targets)

    @property
    def n_pad(self) -> int:
        return self.input_ids.numel() - self.n_computed

    def to(self, device: str | torch.device) -> "Batch":
        mask = None if self.mask is None else self.mask.to(device)
        layout = None if self.layout is None else self.layout.to(device)
        weights = None if self.weights is None else self.weights.to(device)
        also = [None if t is None else t.to(device) for t in (self.also_index, self.also_targets, self.also_weights)]
        return Batch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device), self.rows,
                     self.n_tokens, self.n_targets, self.n_computed, mask, self.prefix_len, layout, weights,
                     self.weight_total, *also)


def pack_rows(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into rows whose lengths sum to at most `max_len`.

    Each sample must already fit (`Encoder` truncates). Row order follows the first (longest) sample.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_len - n)
    return rows


def shared_prefix_length(samples: Sequence[Sample]) -> int:
    """Longest common prefix that carries no loss and whose last token predicts no trained token.

    Every sample keeps at least one token after it. 0 when fewer than two samples.
    """
    if len(samples) < 2:
        return 0
    first = samples[0].input_ids
    n = min(len(s) for s in samples) - 1
    p = 0
    while p < n and all(s.input_ids[p] == first[p] for s in samples):
        p += 1
    # labels[0..p] must all be untrained: labels[p] is the target of the prefix's last token
    while p > 0 and any(lab != IGNORE for s in samples for lab in s.labels[: p + 1]):
        p -= 1
    return p


def _weights(chosen: Sequence[Sample], shape: tuple[int, int]) -> torch.Tensor | None:
    """A ones tensor for the batch's target weights, or None when no chosen sample is weighted."""
    return torch.ones(shape, dtype=torch.float32) if any(s.weights is not None for s in chosen) else None


def _put_weights(wt: torch.Tensor | None, r: int, at: int, s: Sample, start: int) -> float:
    """Write sample `s`'s shifted target weights from position `start` on; returns their sum over trained targets."""
    shifted = s.labels[start + 1 :] + [IGNORE]
    if wt is None or s.weights is None:
        return float(sum(1 for t in shifted if t != IGNORE))
    w = list(s.weights[start + 1 :]) + [1.0]
    wt[r, at : at + len(w)] = torch.tensor(w)
    return float(sum(x for x, t in zip(w, shifted) if t != IGNORE))


class _Also:
    """Collects the chosen samples' soft-target terms as flat batch positions (see the module docstring)."""

    def __init__(self, width: int):
        self.width = width
        self.index: list[int] = []
        self.tokens: list[int] = []
        self.weights: list[float] = []

    def put(self, r: int, at: int, s: Sample, start: int) -> float:
        """Terms of sample `s` placed at column `at` of row `r` from its token `start` on; returns their weight."""
        for i, tok, w in s.also:  # label index i is predicted from position i - 1
            self.index.append(r * self.width + at + i - start - 1)
            self.tokens.append(tok)
            self.weights.append(w)
        return float(sum(w for _, _, w in s.also))

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if not self.index:
            return None, None, None
        return (torch.tensor(self.index, dtype=torch.long), torch.tensor(self.tokens, dtype=torch.long),
                torch.tensor(self.weights, dtype=torch.float32))


def make_batch(samples: Sequence[Sample], indices: Sequence[int], *, max_seq_length: int, pad_id: int,
               packing: bool = True, share_prefix: bool = False, varlen: bool = False) -> Batch:
    """Collate `samples[indices]` into one padded (packed) micro-batch (see the module docstring).

    varlen: describe the samples as segments for `attention.varlen_attention` (the model must use it);
    a shared-prefix batch is then one row, since attention cost no longer grows with the row length.
    """
    chosen = [samples[i] for i in indices]
    prefix = shared_prefix_length(chosen) if packing and share_prefix else 0
    if prefix >= MIN_SHARED_PREFIX:
        return _shared_prefix_batch(chosen, indices, prefix, max_seq_length, pad_id, varlen)
    if packing:
        local_rows = pack_rows([len(s) for s in chosen], max_seq_length)
    else:
        local_rows = [[k] for k in range(len(chosen))]
    width = max(sum(len(chosen[k]) for k in row) for row in local_rows)
    if varlen:
        width = round_up(width, VARLEN_WIDTH_MULTIPLE)
    n_rows = len(local_rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    tgt = torch.full((n_rows, width), IGNORE, dtype=torch.long)
    wt = _weights(chosen, (n_rows, width))
    also = _Also(width)
    n_tokens = n_targets = 0
    w_total = 0.0
    segments: list[tuple[int, int]] = []
    for r, row in enumerate(local_rows):
        at = 0
        for k in row:
            s = chosen[k]
            n = len(s)
            segments.append((r * width + at, n))
            ids[r, at : at + n] = torch.tensor(s.input_ids)
            pos[r, at : at + n] = torch.arange(n)
            shifted = s.labels[1:] + [IGNORE]
            tgt[r, at : at + n] = torch.tensor(shifted)
            n_targets += sum(1 for t in shifted if t != IGNORE)
            w_total += _put_weights(wt, r, at, s, 0) + also.put(r, at, s, 0)
            at += n
        n_tokens += at
        if at < width:  # padding is its own block: positions restart, nothing trained
            pos[r, at:] = torch.arange(width - at)
    rows = [[indices[k] for k in row] for row in local_rows]
    layout = build_layout(segments, None) if varlen else None
    return Batch(ids, pos, tgt, rows, n_tokens, n_targets, -1, None, 0, layout, wt, w_total, *also.tensors())


def _shared_prefix_batch(chosen: Sequence[Sample], indices: Sequence[int], p: int, max_seq_length: int,
                         pad_id: int, varlen: bool) -> Batch:
    rests = [len(s) - p for s in chosen]
    local_rows = [list(range(len(chosen)))] if varlen else pack_rows(rests, max_seq_length - p)
    width = p + max(sum(rests[k] for k in row) for row in local_rows)
    if varlen:
        width = round_up(width, VARLEN_WIDTH_MULTIPLE)
    n_rows = len(local_rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    tgt = torch.full((n_rows, width), IGNORE, dtype=torch.long)
    mask = None if varlen else torch.zeros((n_rows, 1, width, width), dtype=torch.bool)
    wt = _weights(chosen, (n_rows, width))
    also = _Also(width)
    w_total = 0.0
    segments: list[tuple[int, int]] = []
    causal_p = torch.ones(p, p, dtype=torch.bool).tril()
    head = torch.tensor(chosen[0].input_ids[:p])
    n_targets = n_computed = 0
    for r, row in enumerate(local_rows):
        ids[r, :p] = head
        pos[r, :p] = torch.arange(p)
        if mask is not None:
            mask[r, 0, :p, :p] = causal_p
        at = p
        for k in row:
            s, n = chosen[k], rests[k]
            ids[r, at : at + n] = torch.tensor(s.input_ids[p:])
            pos[r, at : at + n] = torch.arange(p, p + n)
            shifted = s.labels[p + 1 :] + [IGNORE]
            tgt[r, at : at + n] = torch.tensor(shifted)
            n_targets += sum(1 for t in shifted if t != IGNORE)
            w_total += _put_weights(wt, r, at, s, p) + also.put(r, at, s, p)
            segments.append((r * width + at, n))
            if mask is not None:
                mask[r, 0, at : at + n, :p] = True
                mask[r, 0, at : at + n, at : at + n] = torch.ones(n, n, dtype=torch.bool).tril()
            at += n
        n_computed += at
        if at < width:  # padding attends to itself only (a fully masked row would give NaN)
            pos[r, at:] = torch.arange(width - at)
            if mask is not None:
                mask[r, 0, at:, at:] = torch.eye(width - at, dtype=torch.bool)
    rows = [[indices[k] for k in row] for row in local_rows]
    n_tokens = sum(len(s) for s in chosen)
    layout = build_layout(segments, (0, p)) if varlen else None
    return Batch(ids, pos, tgt, rows, n_tokens, n_targets, n_computed, mask, p, layout, wt, w_total, *also.tensors())


class BatchPlan:
    """Which samples form micro-batch k: deterministic in (seed, k), so a resumed run sees the same data.

    Training batches hold `batch_size` samples drawn without replacement from a per-epoch permutation; the
    last incomplete batch of an epoch is dropped (as in mlx-lm), unless the split is smaller than one batch.

    With `lengths` and `group` > 1, each run of `group` batches of the permutation is sorted by sample length
    before being cut into batches, and the epoch's batches are then shuffled: every sample is still seen once
    per epoch in a random batch position, but a batch holds samples of similar length. Varlen attention pads
    a batch's segments to its longest one, so such batches compute less padding.
    """

    def __init__(self, n_samples: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None,
                 group: int = 0):
        if n_samples == 0:
            raise ValueError("no training samples")
        if lengths is not None and len(lengths) != n_samples:
            raise ValueError(f"lengths: {len(lengths)} values for {n_samples} samples")
        self.n = n_samples
        self.batch_size = min(batch_size, n_samples)
        self.seed = seed
        self.per_epoch = max(1, self.n // self.batch_size)
        self.lengths = None if lengths is None or group <= 1 else np.asarray(lengths)
        self.group = group
        self._cache: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            if self.lengths is not None:
                perm = self._grouped(perm, rng)
            self._cache = (epoch, perm)
        return self._cache[1]

    def _grouped(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        bs, size = self.batch_size, self.group * self.batch_size
        assert self.lengths is not None
        runs = [perm[i : i + size] for i in range(0, self.n, size)]
        perm = np.concatenate([r[np.argsort(self.lengths[r], kind="stable")] for r in runs])
        full = self.per_epoch * bs
        batches = perm[:full].reshape(self.per_epoch, bs)[rng.permutation(self.per_epoch)]
        return np.concatenate([batches.reshape(-1), perm[full:]])

    def indices(self, k: int) -> list[int]:
        epoch, j = divmod(k, self.per_epoch)
        return [int(i) for i in self._perm(epoch)[j * self.batch_size : (j + 1) * self.batch_size]]

    def epoch_of(self, k: int) -> float:
        return k / self.per_epoch


def eval_batches(n_samples: int, batch_size: int, max_batches: int) -> list[list[int]]:
    """Fixed, in-order batches for validation/test (-1 = all, the last one may be smaller)."""
    chunks = [list(range(i, min(i + batch_size, n_samples))) for i in range(0, n_samples, batch_size)]
    return chunks if max_batches < 0 else chunks[:max_batches]


def padding_waste(batches: Sequence[Batch]) -> float:
    """Fraction of computed positions that are padding."""
    total = sum(b.input_ids.numel() for b in batches)
    return 0.0 if total == 0 else sum(b.n_pad for b in batches) / total
