"""Hub datasets (e.g. `mlx-community/wikisql`) in the same three formats; needs `pip install datasets`."""

from __future__ import annotations

from typing import Any

from tickerpulse.data.formats import DataError, Format, check_row, detect_format

_SPLIT_NAMES = {"valid": ("validation", "valid", "val"), "train": ("train",), "test": ("test",)}


def load_hub_split(dataset_id: str, split: str) -> tuple[list[dict[str, Any]], Format]:
    """Download (or read from the hub cache) one split and validate it like a local file."""
    try:
        import datasets
    except ImportError:
        raise ImportError("loading a hub dataset needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # offline, missing, gated
        raise FileNotFoundError(
            f"hub dataset {dataset_id!r} could not be loaded ({type(exc).__name__}: {exc}); "
            "download it where the hub is reachable and pass a local folder with train/valid/test.jsonl"
        ) from None
    name = next((n for n in _SPLIT_NAMES[split] if n in ds), None)
    if name is None:
        raise FileNotFoundError(f"hub dataset {dataset_id!r} has no {split} split (has {list(ds)})")
    rows = [dict(r) for r in ds[name]]
    fmt: Format | None = None
    for i, row in enumerate(rows, start=1):
        try:
            fmt = fmt or detect_format(row)
            check_row(row, fmt)
        except ValueError as exc:
            raise DataError(f"{dataset_id}/{name}", i, str(exc)) from None
    return rows, fmt or "text"
