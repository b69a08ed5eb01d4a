"""Typed configs merged once: defaults < YAML < CLI flags.

Every config is a pydantic model with `extra="forbid"`, so an unknown key is an error that names the key
(and the closest known one). YAML is read with the float resolver mlx-lm uses, so `1e-5` is a float and
not the string PyYAML's YAML 1.1 rules would give.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A config file or flag is wrong; the message names the key and the source."""


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; `1e-5` parses as a float. Raises ConfigError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (possibly nested) model at `loc`, for did-you-mean hints."""
    cls: Any = model
    for part in loc[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def build(model: type[T], *layers: dict[str, Any] | None, source: str = "config") -> T:
    """Merge dict layers left to right (later wins, nested dicts merge) and validate into `model`.

    Args:
        model: the config class.
        layers: e.g. (yaml_dict, cli_overrides); None entries and None values in the last layer are skipped,
            so an unset CLI flag never overrides YAML.
        source: shown in errors (usually the YAML path).

    Raises:
        ConfigError: unknown key (named, with a suggestion) or a value of the wrong type/range.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            _deep_merge(merged, {k: v for k, v in layer.items() if v is not None})
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(model, exc, source)) from None


def _deep_merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = value


def _explain(model: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(f"{source}: unknown key '{key}'{more}")
        else:
            lines.append(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load(model: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """defaults < YAML file at `path` < `overrides` (CLI flags)."""
    data = load_yaml(path) if path else {}
    return build(model, data, overrides, source=str(path) if path else "flags")


def parse_set_flags(items: list[str] | None) -> dict[str, Any]:
    """Turn repeated `--set a.b=value` flags into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.load(raw, Loader=_Loader) if raw else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
