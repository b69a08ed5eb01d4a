"""The server's batched decode loop: many outputs in one forward per step, each with its own sampling
settings, stop strings, optional JSON constraint and streaming callback.

Rows of a batch may have prompts and forced chunks of different lengths, so inputs are right-padded and the
padding is masked out of attention (a 2D mask over the whole cache) with explicit position ids. A row that
finishes leaves the batch at once (`DynamicCache.batch_select_indices`), so it stops costing compute.
Tokens the grammar forces (JSON keys, punctuation) are fed as one chunk without sampling ("jump forward").
A constraint that runs short of budget writes its closing tokens instead of sampling, so JSON is never cut.

All rows of a call share one adapter and, optionally, one cached prompt prefix (`Runtime.prefix_kv`).
A row whose own settings or constraint raise (a seed numpy refuses, a grammar that cannot go on) leaves the
batch with the exception in `GenRequest.error`; the other rows finish as if it had never been there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickerpulse.models.generate import IncrementalDecoder


@dataclass
class GenRequest:
    """One output to generate. Results are written into the same object."""

    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    constraint: Any = None  # GrammarConstraint-like: forced_ids(), mask(budget), accept(id, budget_after), close(),
    # complete(), done(); optional observe(logits)
    on_text: Callable[[str], None] | None = None  # streaming: new text pieces, called from the model thread
    cancelled: Callable[[], bool] | None = None
    # results
    out_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""
    generated: int = 0  # tokens produced (sampled + forced)
    error: Exception | None = None  # what stopped this row alone (finish_reason "error")

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


class _Row:
    def __init__(self, req: GenRequest, tok: Any, device: Any) -> None:
        self.req = req
        self.dec = IncrementalDecoder(tok)
        self.emitted = 0
        self.rng = np.random.default_rng(req.seed)

    def add_ids(self, ids: list[int]) -> None:
        r = self.req
        for t in ids:
            r.out_ids.append(t)
            self.dec.add(t)
        r.generated += len(ids)
        r.text = self.dec.text

    def check_stop(self) -> bool:
        r = self.req
        for s in r.stop:
            i = r.text.find(s)
            if s and i >= 0:
                r.text = r.text[:i]
                return True
        return False

    def emit(self, final: bool) -> None:
        r = self.req
        if r.on_text is None:
            return
        upto = len(r.text)
        if not final and r.stop:
            held = 0
            for s in r.stop:
                for k in range(min(len(s) - 1, upto), 0, -1):
                    if r.text.endswith(s[:k]):
                        held = max(held, k)
                        break
            upto -= held
        if upto > self.emitted:
            r.on_text(r.text[self.emitted:upto])
            self.emitted = upto


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """One token id from a row of logits (numpy: per-row work on a 50k vector is cheaper than torch ops)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        sp = p[order]
        keep = (np.cumsum(sp) - sp) < top_p
        sp = np.where(keep, sp, 0.0)
        return int(order[rng.choice(len(sp), p=sp / sp.sum())])
    return int(rng.choice(len(p), p=p))


def decode(rt: Any, reqs: Sequence[GenRequest], adapter: str | None = None, prefix_ids: Sequence[int] | None = None) -> None:
    """Generate every request in one batch. Call inside `rt.use(adapter)`.

    Args:
        rt: the Runtime.
        reqs: outputs to generate; when `prefix_ids` is given each prompt must start with it.
        adapter: the active adapter (for the prefix cache key).
        prefix_ids: a shared prompt prefix whose KV is cached per adapter.
    """
    import torch

    if not reqs:
        return
    p = len(prefix_ids) if prefix_ids else 0
    if any(len(r.prompt_ids) <= p for r in reqs):
        raise ValueError("every prompt must be longer than the cached prefix")
    rows, chunks = [], []
    for r in reqs:
        try:
            row, c = _Row(r, rt.tok, rt.device), list(r.prompt_ids[p:])
            if r.constraint is not None and (ids := r.constraint.forced_ids()):
                c += ids  # e.g. '{"name": ' of a schema: written without asking the model
                row.add_ids(ids)
        except Exception as exc:  # noqa: BLE001 - this row's own fault: it alone fails
            _fail(r, exc)
            continue
        rows.append(row)
        chunks.append(c)
    if not rows:
        return
    dev = rt.device
    kv = rt.prefix_kv(adapter, prefix_ids) if p else None
    cache = rt.cache_from_prefix(kv, len(rows))
    attn = torch.ones((len(rows), p), dtype=torch.long, device=dev)
    seen = [p] * len(rows)  # real tokens in the cache per row = the next position id
    vocab = rt.hf.config.vocab_size
    while rows:
        width = max(len(c) for c in chunks)
        x = torch.full((len(rows), width), rt.pad_id, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        new_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, c in enumerate(chunks):
            x[i, : len(c)] = torch.tensor(c)
            pos[i] = torch.arange(seen[i], seen[i] + width)
            new_mask[i, : len(c)] = 1
        attn = torch.cat([attn, new_mask.to(dev)], dim=1)
        h = rt.hidden(x.to(dev), cache, attention_mask=attn, position_ids=pos.to(dev))
        last = h[torch.arange(len(rows)), torch.tensor([len(c) - 1 for c in chunks])]
        logits = rt.logits(last).cpu()[:, :vocab].numpy()
        keep: list[int] = []
        nxt_chunks: list[list[int]] = []
        for i, row in enumerate(rows):
            seen[i] += len(chunks[i])
            try:
                ids = _advance(rt, row, logits[i])
            except Exception as exc:  # noqa: BLE001 - the row's constraint or sampling settings failed
                _fail(row.req, exc)
                continue
            if ids is None:
                row.emit(final=True)
                continue
            keep.append(i)
            nxt_chunks.append(ids)
        if len(keep) < len(rows):
            if not keep:
                break
            idx = torch.tensor(keep, device=dev)
            cache.batch_select_indices(idx)
            attn = attn[idx]
            rows = [rows[i] for i in keep]
            seen = [seen[i] for i in keep]
        chunks = nxt_chunks


def _advance(rt: Any, row: _Row, logits: np.ndarray) -> list[int] | None:
    """Pick this row's next token(s) from its logits; None when the row is finished."""
    r = row.req
    if r.cancelled is not None and r.cancelled():
        r.finish_reason = "cancelled"
        return None
    budget = r.max_new_tokens - r.generated
    c = r.constraint
    if c is not None:
        if hasattr(c, "observe"):
            c.observe(logits)
        allowed = c.mask(budget)
        if allowed is None or not allowed.any():
            return _close(row, "length")  # only the closing still fits: write it instead of cutting the JSON
        logits = np.where(allowed, logits, -np.inf)
    tok = _sample(logits, r.temperature, r.top_p, row.rng)
    if tok in rt.eos_ids and (c is None or c.complete()):
        r.finish_reason = "stop"
        return None
    ids = [tok]
    if c is not None:
        if not c.accept(tok, budget - 1):  # the token would leave no room to close
            return _close(row, "length")
        ids += c.forced_ids()
    row.add_ids(ids)
    if row.check_stop():
        r.finish_reason = "stop"
        return None
    if c is not None and c.done():
        r.finish_reason = "stop"
        return None
    if r.generated >= r.max_new_tokens:
        r.finish_reason = "length"
        return None
    row.emit(final=False)
    return ids


def _fail(req: GenRequest, exc: Exception) -> None:
    req.error, req.finish_reason = exc, "error"


def _close(row: _Row, reason: str) -> None:
    """Finish a constrained row with its closing tokens (the shortest ending the grammar engine found)."""
    ids = row.req.constraint.close()
    if ids:
        row.add_ids(ids)
    row.req.finish_reason = reason
    return None
