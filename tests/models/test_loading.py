"""serving.json: a model folder's declared CPU dtype decides what dtype "auto" loads (tickerpulse.models.loading)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tickerpulse.models import loading  # noqa: E402


def test_auto_follows_the_folders_serving_dtype_only_where_the_cpu_has_bf16(tmp_path, monkeypatch):
    assert loading.pick_dtype("auto", "cpu", tmp_path) is torch.float32  # no serving.json: exact
    loading.write_serving_dtype(tmp_path, "bfloat16", "evaluated in bf16")
    assert loading.declared_cpu_dtype(tmp_path) == "bfloat16"
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert loading.pick_dtype("auto", "cpu", tmp_path) is torch.bfloat16
    assert loading.pick_dtype("float32", "cpu", tmp_path) is torch.float32  # an explicit dtype wins
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    assert loading.pick_dtype("auto", "cpu", tmp_path) is torch.float32  # emulated bf16 would be slower, not faster
    loading.write_serving_dtype(tmp_path, "float32", "exact")
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert loading.pick_dtype("auto", "cpu", tmp_path) is torch.float32


def test_a_broken_serving_file_names_itself(tmp_path):
    (tmp_path / loading.SERVING_FILE).write_text('{"cpu_dtype": "int8"}')
    with pytest.raises(ValueError, match=r"serving\.json: cpu_dtype must be one of float32, bfloat16, got 'int8'"):
        loading.declared_cpu_dtype(tmp_path)
    (tmp_path / loading.SERVING_FILE).write_text("[1, 2")
    with pytest.raises(ValueError, match=r"serving\.json: not a JSON object"):
        loading.declared_cpu_dtype(tmp_path)
    with pytest.raises(ValueError, match="cpu_dtype must be one of"):
        loading.write_serving_dtype(tmp_path, "fp8", "no")
