"""One place that imports heavy optional dependencies and says what to install when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> extra that provides it
_EXTRAS = {
    "mlx": "mlx",
    "mlx_lm": "mlx",
    "pyspark": "stream",
    "confluent_kafka": "stream",
    "elasticsearch": "stream",
    "pandas": "stream",
    "pyarrow": "stream",
    "wandb": "track",
    "swanlab": "track",
    "mlflow": "track",
    "tensorboard": "track",
    "torch.utils.tensorboard": "track",
    "llama_cpp": "gguf",
    "bitsandbytes": None,
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""


def require(module: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming the pip extra to install.

    Args:
        module: dotted module name, e.g. "confluent_kafka".
        purpose: what needs it, for the error message ("the Kafka bus").
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module) or _EXTRAS.get(module.split(".")[0])
        how = f"pip install 'tickerpulse[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        what = f" for {purpose}" if purpose else ""
        raise MissingDependency(f"{module} is needed{what} but is not installed: {how}") from exc
