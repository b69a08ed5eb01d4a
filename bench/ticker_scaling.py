#!/usr/bin/env python
"""How ticker extraction and post parsing scale on hostile input: CPU time of `extract_tickers` on
adversarial 10k/20k/40k/80k-character texts (the stream accepts 40k), without and with company names
(`names=True`, what the stream uses), and the ratio per doubling (linear: ~2x, quadratic: ~4x); plus
`parse_post` throughput on ordinary posts (the hostile-input checks' cost).

    python bench/ticker_scaling.py
Writes bench/results/ticker_scaling.json (and prints a table).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tickerpulse.stream.schema import parse_post
from tickerpulse.task.tickers import extract_tickers

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "dots": lambda n: ("a." * n)[:n],
    "mentions": lambda n: ("$AAPL and MSFT up " * n)[:n],
    "cashtags": lambda n: ("$A " * n)[:n],
    "exchange": lambda n: ("NYSE:AA NVDA " * n)[:n],
    "word_run": lambda n: "a" * n,
    "at_signs": lambda n: ("a@b" * n)[:n],
    "prose": lambda n: ("Shares of $NVDA rose 3% after NASDAQ: AMD guided higher; see https://x.com/a " * n)[:n],
    "names": lambda n: ("Tesla and Apple Inc. beat, Bank of America's price target on Target Corp " * n)[:n],
    "name_prefixes": lambda n: ("Bank of " * n)[:n],
    "words": lambda n: ("a " * n)[:n],
}
SIZES = [10_000, 20_000, 40_000, 80_000]


def cpu_best(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    extract_tickers("warm up $AAPL Tesla", names=True)
    rows = []
    for names in (False, True):
        for name, make in SHAPES.items():
            ms = [round(cpu_best(lambda: extract_tickers(make(n), names=names)) * 1000, 2) for n in SIZES]
            ratios = [round(b / max(a, 1e-6), 2) for a, b in zip(ms, ms[1:])]
            rows.append({"shape": name, "names": names, "ms": dict(zip(map(str, SIZES), ms)),
                         "ratio_per_doubling": ratios})
            print(f"{name:13s} names={names!s:5s} " + "  ".join(f"{n // 1000}k {m:7.2f} ms" for n, m in zip(SIZES, ms))
                  + f"   x{ratios}")
    posts = [json.dumps({"id": f"p{i}", "source": "replay", "text": f"$AAPL beats estimates {i} " * 5,
                         "created_at": 1714564800 + i, "channel": "stocks"}).encode() for i in range(20_000)]
    secs = cpu_best(lambda: [parse_post(p) for p in posts], 3)
    print(f"parse_post: {len(posts) / secs:,.0f} posts/s (CPU)")
    out = {"machine": platform.platform(), "python": platform.python_version(), "unit": "CPU ms, best of 5",
           "extract_tickers": rows, "parse_post_per_s": round(len(posts) / secs)}
    path = ROOT / "bench" / "results" / "ticker_scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
