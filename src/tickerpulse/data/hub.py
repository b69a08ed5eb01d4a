"""mlx-lm's `hf_dataset` config entries, loaded in the same three formats; needs `pip install datasets`.

(A plain hub dataset id as a data folder is `formats.load_split`.)
"""

from __future__ import annotations

from typing import Any

from tickerpulse.data.formats import DataError, Format, check_row, detect_format

# mlx-lm's `hf_dataset` defaults (tuner/datasets.py load_custom_hf_dataset)
HF_DEFAULT_SPLITS = {"train": "train[:80%]", "valid": "train[-10%:]", "test": None}


def load_hf_dataset(specs: dict[str, Any] | list[dict[str, Any]], split: str) -> tuple[list[dict[str, Any]], Format]:
    """One split of mlx-lm's `hf_dataset`: `datasets.load_dataset(path, split=<split>_split, **config)` per entry,
    rows renamed from `prompt_feature` / `completion_feature` / `chat_feature` / `text_feature` to the canonical
    keys, validated like a local file and concatenated (entries must share one format).

    `path` may be a hub id or anything `load_dataset` reads locally (a folder of JSONL files, `json` with
    `config: {data_files: ...}`). Raises FileNotFoundError when the split is not configured (test without
    `test_split`, as mlx-lm needs it too) or cannot be loaded, DataError for a bad row."""
    try:
        import datasets
    except ImportError:
        raise ImportError("hf_dataset needs the datasets package: pip install 'tickerpulse[hub]'") from None
    rows: list[dict[str, Any]] = []
    fmt: Format | None = None
    for spec in [specs] if isinstance(specs, dict) else specs:
        name = spec.get(f"{split}_split") or HF_DEFAULT_SPLITS[split]
        where = f"hf_dataset {spec['path']}[{name}]"
        if name is None:
            raise FileNotFoundError(f"hf_dataset {spec['path']}: no {split}_split given (mlx-lm has no default for it)")
        try:
            ds = datasets.load_dataset(spec["path"], split=name, **(spec.get("config") or {}))
        except Exception as exc:  # offline, missing, gated, bad split expression
            raise FileNotFoundError(f"{where} could not be loaded ({type(exc).__name__}: {exc})") from None
        keys = {"prompt": spec.get("prompt_feature") or "prompt",
                "completion": spec.get("completion_feature") or "completion",
                "messages": spec.get("chat_feature") or "messages", "text": spec.get("text_feature") or "text"}
        part_fmt: Format | None = None
        for i, raw in enumerate(ds, start=1):
            row = _canonical(dict(raw), keys)
            try:
                part_fmt = part_fmt or detect_format(row)
                check_row(row, part_fmt)
            except ValueError as exc:
                raise DataError(where, i, str(exc)) from None
            rows.append(row)
        if part_fmt is not None and fmt is not None and part_fmt != fmt:
            raise DataError(where, 1, f"format {part_fmt} differs from the earlier hf_dataset entries' {fmt}; "
                            "convert them to one format")
        fmt = fmt or part_fmt
    return rows, fmt or "text"


def _canonical(row: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """mlx-lm's feature choice (prompt+completion, else chat, else text) under our key names."""
    if keys["prompt"] in row and keys["completion"] in row:
        return {"prompt": row[keys["prompt"]], "completion": row[keys["completion"]]}
    if keys["messages"] in row:
        return {"messages": row[keys["messages"]], **({"tools": row["tools"]} if row.get("tools") else {})}
    if keys["text"] in row:
        return {"text": row[keys["text"]]}
    return row  # detect_format names the keys it found
