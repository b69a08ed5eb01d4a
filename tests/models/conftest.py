"""One loaded SmolLM2 (fp32, CPU) shared by the generation tests of this folder; MLX logits for comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def mlx_logits(base: Path, ids: list[int], adapter_dir: Path | None = None) -> Any:
    """fp32 numpy logits MLX computes for `ids` with `base` (+ an mlx-lm adapter folder)."""
    from tickerpulse.models.mlx import import_mlx, load_mlx

    mx = import_mlx()
    model, _ = load_mlx(base, adapter_path=adapter_dir)
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path):
    """(model, tokenizer) of the real SmolLM2-135M-Instruct."""
    from tickerpulse.models.loading import load_model

    return load_model(smollm2_path, device="cpu")
