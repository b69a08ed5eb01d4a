"""Backends by name, behind the `--bus`, `--store` and `--processor` flags.

Each backend is one module with one hook function; the registry maps names to module paths and imports
lazily, so `--bus sqlite` never imports confluent-kafka. A name whose module is not in this build is
listed but unavailable (a loud error, never a silent fallback).

Hooks (what a backend module defines):
  bus module:       `open_bus(cfg: StreamConfig) -> Bus`
  store module:     `open_store(cfg: StreamConfig, read_only: bool = False) -> Store`
  processor module: `run_processor(cfg: StreamConfig, stop: threading.Event | None = None,
                                   until_idle: float | None = None) -> dict` (stats; returns when `stop`
                    is set, or after `until_idle` seconds without new records)

Third-party backends can `register("bus", "redis", "mypkg.redis_bus")`.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import TYPE_CHECKING, Any, Literal

from tickerpulse.config import ConfigError

if TYPE_CHECKING:
    from tickerpulse.stream.bus.base import Bus
    from tickerpulse.stream.config import StreamConfig
    from tickerpulse.stream.store.base import Store

Kind = Literal["bus", "store", "processor"]

_MODULES: dict[str, dict[str, str]] = {
    "bus": {"sqlite": "tickerpulse.stream.bus.sqlite", "kafka": "tickerpulse.stream.bus.kafka"},
    "store": {"duckdb": "tickerpulse.stream.store.duckdb", "elasticsearch": "tickerpulse.stream.store.elasticsearch"},
    "processor": {"local": "tickerpulse.stream.processor", "spark": "tickerpulse.stream.spark"},
}
_HOOKS = {"bus": "open_bus", "store": "open_store", "processor": "run_processor"}


def register(kind: Kind, name: str, module: str) -> None:
    """Add or replace a backend: `module` must define the hook of its kind."""
    _MODULES[kind][name] = module


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def names(kind: Kind) -> list[str]:
    """All known names of a kind, available or not."""
    return list(_MODULES[kind])


def available(kind: Kind) -> list[str]:
    """Names whose module exists in this build (its optional dependencies may still be missing: the
    hook raises MissingDependency naming the extra)."""
    return [n for n, m in _MODULES[kind].items() if _present(m)]


def hook(kind: Kind, name: str) -> Any:
    """The hook function of backend `name`; ConfigError naming the flag when it is unknown/unavailable."""
    mods = _MODULES[kind]
    if name not in mods:
        raise ConfigError(f"--{kind} {name!r} is unknown: choose one of {', '.join(mods)}")
    if not _present(mods[name]):
        raise ConfigError(f"--{kind} {name!r} is not available in this build (no module {mods[name]}); "
                          f"available: {', '.join(available(kind))}")
    return getattr(importlib.import_module(mods[name]), _HOOKS[kind])


def open_bus(cfg: StreamConfig) -> Bus:
    return hook("bus", cfg.bus)(cfg)


def open_store(cfg: StreamConfig, read_only: bool = False) -> Store:
    return hook("store", cfg.store)(cfg, read_only=read_only)


def run_processor(cfg: StreamConfig, stop: threading.Event | None = None, until_idle: float | None = None) -> dict:
    return hook("processor", cfg.processor)(cfg, stop=stop, until_idle=until_idle)
