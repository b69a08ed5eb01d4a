"""One loaded SmolLM2 (fp32, CPU) shared by the generation tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path):
    """(model, tokenizer) of the real SmolLM2-135M-Instruct."""
    from tickerpulse.models.loading import load_model

    return load_model(smollm2_path, device="cpu")
