"""Fast-mode label calibration, read from `calibration.json` in an adapter or model folder.

`{"temperature": T, "label_bias": [b_neg, b_neu, b_pos]}`: the three label logits z become
`softmax((z + b) / T)`. The bias moves the decision boundary (the label is `argmax(z + b)`, independent of T),
the temperature only the confidence, i.e. the score p(pos) - p(neg). Both are fitted on validation data by
whoever trains the model (`tickerpulse.recipe.systems`); a missing file or key means T = 1, b = 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "calibration.json"


@dataclass(frozen=True)
class LabelCalibration:
    temperature: float = 1.0
    label_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def read(cls, *folders: Path | None) -> "LabelCalibration":
        """The first folder's calibration.json that exists (unusable values fall back to the identity)."""
        for folder in folders:
            if folder is None or not (Path(folder) / FILE).is_file():
                continue
            raw = json.loads((Path(folder) / FILE).read_text())
            t = float(raw.get("temperature", 1.0))
            bias = raw.get("label_bias") or (0.0, 0.0, 0.0)
            ok_bias = len(bias) == 3 and all(math.isfinite(float(b)) for b in bias)
            return cls(t if math.isfinite(t) and t > 0 else 1.0,
                       tuple(float(b) for b in bias) if ok_bias else (0.0, 0.0, 0.0))  # type: ignore[arg-type]
        return cls()

    def probs(self, z: Any) -> Any:
        """Label probabilities from label logits `z` (..., 3): a torch tensor or a numpy array."""
        if hasattr(z, "softmax"):  # torch
            import torch

            b = torch.tensor(self.label_bias, dtype=z.dtype, device=z.device)
            return torch.softmax((z + b) / self.temperature, dim=-1)
        import numpy as np

        x = (np.asarray(z, dtype=np.float64) + np.asarray(self.label_bias)) / self.temperature
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
