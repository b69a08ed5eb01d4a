"""Where tickerpulse keeps things it builds once (converted models, caches).

`TICKERPULSE_HOME` overrides the location; otherwise the platform's user cache dir
(`~/.cache/tickerpulse` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root folder for converted models and caches (created on demand)."""
    env = os.environ.get("TICKERPULSE_HOME")
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("tickerpulse"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Folder holding converted built-in models and named trained models."""
    d = home() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d
