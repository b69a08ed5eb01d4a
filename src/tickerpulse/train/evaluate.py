"""Test loss and perplexity of a model (+ adapter) on a data split, like mlx-lm's `--test`.

The loss is the mean next-token cross-entropy over trained tokens, with the same tokenization, prompt
masking and packing as training (a run folder's own `mask_prompt` / `max_seq_length` are used by default),
so test and validation numbers are comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tickerpulse.data.formats import load_split
from tickerpulse.models.loading import load_tokenizer, pick_device, pick_dtype
from tickerpulse.models.registry import resolve
from tickerpulse.train.attention import enable_varlen
from tickerpulse.train.collate import Encoder, stop_token_ids
from tickerpulse.train.backends.torch_steps import can_share_prefix, evaluate_loss
from tickerpulse.train.packing import eval_batches, make_batch


def test_loss(
    model_name: str | None,
    adapter: str | Path | None,
    data_dir: str | Path,
    split: str = "test",
    batch_size: int = 4,
    num_batches: int = -1,
    max_seq_length: int | None = None,
    *,
    mask_prompt: bool | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Mean token loss, perplexity and token count on `split` of `data_dir`.

    Args:
        model_name: base model (built-in, hub id, folder); None = the adapter run's base model.
        adapter: run folder (best adapter) or adapter file; None = the base model alone.
        num_batches: -1 = the whole split (mlx-lm `test_batches`).
        max_seq_length, mask_prompt: default to the run's settings (2048 / True without a run).

    Returns:
        {"loss", "ppl", "tokens", "samples", "split"}

    Raises:
        FileNotFoundError: missing split / adapter; DataError: broken rows.
    """
    import torch
    from transformers import AutoModelForCausalLM

    run_cfg: dict[str, Any] = {}
    if adapter is not None:
        from tickerpulse.models.adapters import read_run

        info = read_run(adapter)
        run_cfg = info.config
        model_name = model_name or info.base_model
    if model_name is None:
        raise ValueError("test_loss needs a model (or an adapter run folder that names its base model)")
    max_len = max_seq_length or int(run_cfg.get("max_seq_length", 2048))
    mask = mask_prompt if mask_prompt is not None else bool(run_cfg.get("mask_prompt", True))
    folder = resolve(str(model_name))
    tok = load_tokenizer(folder)
    rows, fmt = load_split(str(data_dir), split)
    enc = Encoder(tok, mask_prompt=mask, max_seq_length=max_len, stop_ids=stop_token_ids(tok, str(folder)))
    samples = enc.encode_split(rows, fmt).samples
    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(dtype, dev))
    if adapter is not None:
        from tickerpulse.models.adapters import apply_adapter

        model = apply_adapter(model, adapter)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.to(dev).eval()
    varlen = enable_varlen(model, max_len)
    share = bool(run_cfg.get("share_prefix", True)) and can_share_prefix(model, max_len, varlen)
    batches = [make_batch(samples, idx, max_seq_length=max_len, pad_id=tok.pad_token_id, packing=True,
                          share_prefix=share, varlen=varlen)
               for idx in eval_batches(len(samples), batch_size, num_batches)]
    with torch.no_grad():
        loss, n = evaluate_loss(model, batches, dev)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)) if n else math.nan, "tokens": n,
            "samples": sum(sum(len(r) for r in b.rows) for b in batches), "split": split}


test_loss.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name
