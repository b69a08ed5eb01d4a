"""`compile: true`: compiled blocks train to the eager run's losses and weights, under the same parameter names,
and a CPU without a C++ compiler gets a clear error before any step."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from tickerpulse.config import ConfigError
from tickerpulse.train.api import resolve_config, train

from .test_loop import base_flags, losses


@pytest.mark.slow  # ~70 s of inductor compiling on 2 cores (`make test-ci-slow`)
def test_compiled_blocks_train_like_eager(short_data: Path, tiny_model: Path, tmp_path: Path, one_thread):
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        runs[name] = tmp_path / name
        flags = base_flags(short_data, runs[name], tiny_model, iters=6, compile=compiled,
                           lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})  # inductor draws its own RNG
        train(resolve_config(None, flags))
    a, b = losses(runs["eager"]), losses(runs["compiled"])
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[s] - b[s]) / a[s] for s in a) < 1e-3, (a, b)  # fused kernels reorder fp32 sums only
    wa, wb = load_file(runs["eager"] / "adapters.safetensors"), load_file(runs["compiled"] / "adapters.safetensors")
    assert sorted(wa) == sorted(wb) and not any("_orig_mod" in k for k in wb)  # in place: names unchanged
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_compile_without_a_cpp_compiler_is_a_config_error(short_data: Path, tiny_model: Path, tmp_path: Path,
                                                          monkeypatch):
    import torch._inductor.cpp_builder as builder

    def missing() -> str:  # what inductor raises on a machine without g++ / clang++
        raise RuntimeError("Unsupported compiler: none of g++, clang++ found")

    monkeypatch.setattr(builder, "get_cpp_compiler", missing)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        train(resolve_config(None, base_flags(short_data, tmp_path / "run", tiny_model, iters=1, compile=True)))
