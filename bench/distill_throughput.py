#!/usr/bin/env python
"""Distillation throughput through a real local OpenAI-protocol server: rows/s at several concurrencies,
the cost of a fully cached rerun, and the client's CPU time per row.

The teacher is the gold-echo server (`tickerpulse.distill.testing_teacher`) in its own process, so client
and server do not share a GIL; with `--delay` it imitates a remote model's latency (then concurrency is
what buys throughput). Every run uses a fresh cache; the rerun repeats the last run with a warm cache.

    python bench/distill_throughput.py                         # 600 tfns rows, concurrency 1, 8, 32
    python bench/distill_throughput.py --rows 300 --delay 0.2 --concurrency 1,8,32
Writes bench/results/distill_throughput.json (and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(corpus: Path, delay: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tickerpulse.distill.testing_teacher", "--gold", str(corpus),
                             "--port", str(port), "--delay", str(delay)], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1).read()
            return proc, url + "/v1"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("teacher server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--delay", type=float, default=0.0, help="server-side seconds per answer (imitates a remote model)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_throughput.json")
    args = ap.parse_args()

    from tickerpulse.distill.job import DistillConfig, run_distill

    proc, url = _start_server(args.corpus, args.delay)
    n_test = n_valid = args.rows // 6
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for conc in [int(c) for c in args.concurrency.split(",")]:
                cfg = DistillConfig(input=str(args.corpus), limit=max(3 * args.rows, 1500), teacher=url,
                                    teacher_model="gold-echo", out=Path(tmp) / f"out{conc}",
                                    n_train=args.rows - n_valid - n_test, n_valid=n_valid, n_test=n_test,
                                    concurrency=conc, cache=Path(tmp) / f"cache{conc}.sqlite")
                cpu0 = time.process_time()
                rep = run_distill(cfg)
                cpu = time.process_time() - cpu0
                t = rep["timing"]
                results.append({"concurrency": conc, "rows": rep["cache"]["sent"], "label_seconds": t["label_seconds"],
                                "rows_per_s": t["rows_per_s"], "job_seconds": t["seconds"],
                                "client_cpu_ms_per_row": round(1000 * cpu / max(1, rep["cache"]["sent"]), 2)})
                print(f"concurrency {conc:3d}: {t['rows_per_s']:7.1f} rows/s ({t['label_seconds']} s labelling, "
                      f"job {t['seconds']} s, client CPU {results[-1]['client_cpu_ms_per_row']} ms/row)", flush=True)
            t0 = time.perf_counter()
            rep = run_distill(cfg)
            rerun = {"seconds": round(time.perf_counter() - t0, 2), "cache_hits": rep["cache"]["hits"],
                     "sent": rep["cache"]["sent"]}
            print(f"cached rerun: {rerun['seconds']} s, {rerun['cache_hits']} hits, {rerun['sent']} sent")
    finally:
        proc.terminate()
        proc.wait(10)
    out = {"bench": "distill_throughput", "corpus": str(args.corpus), "server_delay_s": args.delay,
           "runs": results, "cached_rerun": rerun, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
           "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
