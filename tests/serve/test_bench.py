"""The serve benchmark runs end to end on a tiny scale (slow: it starts its own server subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serve_latency_bench_writes_results(tmp_path: Path, smollm2_path: Path) -> None:
    out = tmp_path / "serve_latency.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "serve_latency.py"), "--scale", "0.05", "--concurrency", "1,8",
                    "--baseline-n", "1", "--baseline-tokens", "8", "--max-tokens", "4", "--threads", "1",
                    "--out", str(out)], check=True, timeout=1800, cwd=ROOT)
    data = json.loads(out.read_text())
    assert {(r["mode"], r["concurrency"]) for r in data["results"]} == {
        ("fast", 1), ("fast", 8), ("reasoning", 1), ("reasoning", 8)}
    assert all(r["errors"] == 0 and r["p95_s"] >= r["p50_s"] > 0 for r in data["results"])
    assert data["baseline"]["p50_s"] > 0 and "speedup_p50_vs_baseline" in data["results"][0]
