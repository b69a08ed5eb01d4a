"""Resolving and loading base models: built-in short names, hub ids, local folders."""

from tickerpulse.models.registry import BUILTINS, ModelNotFound, resolve

__all__ = ["BUILTINS", "ModelNotFound", "resolve"]
