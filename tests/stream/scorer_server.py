"""A real HTTP scorer server process for the stream fault tests: speaks tickerpulse serve's protocol
(`GET /v1/models`, `POST /v1/sentiment` with `Authorization: Bearer $TICKERPULSE_API_KEY` when that
variable is set, `GET /health` open) and judges with VADER, so a test costs no model load. The test steers
faults through `POST /control` and reads what the server saw from `GET /stats` (both unauthenticated:
test-only routes):

- `{"faults": [[status, count, retry_after], ...]}` queues answers for the next `/v1/*` requests
  (429 with a `Retry-After` header when retry_after is not null, 500/503, ...); a request that arrives
  before the last 429's Retry-After has passed is counted in `early_after_429`;
- `{"sentiment_down": 503}` answers every `/v1/sentiment` with that status until `{"sentiment_down": null}`
  (`/v1/models` keeps answering: an outage of the scoring path only);
- item faults that must be dead-lettered: a request with a text containing `POISON400` is answered 400;
  `BADANSWER` gets an answer outside the schema (score 7).

    python tests/stream/scorer_server.py --port 18080 [--delay 0.02] [--model-id vader-fault-server]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScorerServer:
    """The server as a child process of a test: `url`, `control(...)`, `stats()`, `stop()`."""

    def __init__(self, port: int, key: str | None = None, delay: float = 0.0, model_id: str = "vader-fault-server"):
        import subprocess
        import sys

        import httpx

        env = {k: v for k, v in os.environ.items() if k != "TICKERPULSE_API_KEY"}
        if key:
            env["TICKERPULSE_API_KEY"] = key
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--delay", str(delay),
                                      "--model-id", model_id], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"scorer server died: {self.proc.stderr.read()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "scorer server did not come up"
            time.sleep(0.05)

    def control(self, *faults: tuple[int, int, float | None], **switches: Any) -> None:
        import httpx

        body = {"faults": [list(f) for f in faults], **switches}
        httpx.post(f"{self.url}/control", json=body, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each /v1/sentiment answer takes")
    ap.add_argument("--model-id", default="vader-fault-server")
    args = ap.parse_args()

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    key = os.environ.get("TICKERPULSE_API_KEY", "").strip() or None
    lock = threading.Lock()
    faults: deque[tuple[int, float | None]] = deque()
    stats: dict[str, Any] = {"requests": 0, "ok": 0, "items": 0, "unauthorized": 0, "faults_sent": {},
                             "early_after_429": 0, "pending_faults": 0}
    not_before = [0.0]  # when the last 429's Retry-After ends
    down: list[int | None] = [None]  # a status every /v1/sentiment gets until switched off (an outage)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _gate(self) -> bool:
            """Auth, then a queued fault; True when the request may be served."""
            if key and self.headers.get("Authorization", "") != f"Bearer {key}":
                with lock:
                    stats["unauthorized"] += 1
                self._send(401, {"error": {"message": "missing or wrong API key", "code": "invalid_api_key"}},
                           {"WWW-Authenticate": "Bearer"})
                return False
            with lock:
                stats["requests"] += 1
                if time.time() < not_before[0] - 0.05:
                    stats["early_after_429"] += 1
                fault = faults.popleft() if faults else None
                stats["pending_faults"] = len(faults)
                if fault:
                    status, retry_after = fault
                    stats["faults_sent"][str(status)] = stats["faults_sent"].get(str(status), 0) + 1
                    if status == 429 and retry_after is not None:
                        not_before[0] = time.time() + retry_after
            if fault:
                headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
                self._send(status, {"error": {"message": f"injected {status}", "code": "injected"}}, headers)
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/stats":
                with lock:
                    self._send(200, stats)
            elif self.path == "/v1/models":
                if self._gate():
                    self._send(200, {"object": "list", "data": [{"id": args.model_id, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/control":
                with lock:
                    for status, count, retry_after in body.get("faults", []):
                        faults.extend([(int(status), retry_after)] * int(count))
                    stats["pending_faults"] = len(faults)
                    if "sentiment_down" in body:
                        down[0] = body["sentiment_down"]
                self._send(200, {"pending": len(faults)})
                return
            if self.path != "/v1/sentiment":
                self._send(404, {"error": {"message": "not found"}})
                return
            if not self._gate():
                return
            if down[0]:
                with lock:
                    stats["faults_sent"][str(down[0])] = stats["faults_sent"].get(str(down[0]), 0) + 1
                self._send(int(down[0]), {"error": {"message": "injected outage", "code": "injected"}})
                return
            items = body.get("items") or []
            if any("POISON400" in (it.get("text") or "") for it in items):
                self._send(400, {"error": {"message": "text rejected", "code": "invalid_request"}})
                return
            time.sleep(args.delay)
            results = []
            for it in items:
                c = analyzer.polarity_scores(it.get("text") or "")["compound"]
                label = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"
                score = 7.0 if "BADANSWER" in (it.get("text") or "") else round(c, 3)
                results.append({"ticker": it.get("ticker"), "sentiment": label, "score": score, "reasoning": "vader"})
            with lock:
                stats["ok"] += 1
                stats["items"] += len(items)
            self._send(200, {"object": "sentiment", "model": args.model_id, "mode": body.get("mode", "fast"),
                             "results": results})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
