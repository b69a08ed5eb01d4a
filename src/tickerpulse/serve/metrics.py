"""Prometheus text exposition without a client library: request counters, latency histograms, tokens/s,
queue depth, batch sizes. Thread-safe (the model thread records tokens, the event loop records requests)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _Hist:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.total += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.total}")
        return out


class Metrics:
    """All server metrics. `render()` returns the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, _Hist] = {}
        self.batch_size: dict[str, _Hist] = {}
        self.tokens_total = 0
        self.prompt_tokens_total = 0
        self.texts_total: dict[str, int] = defaultdict(int)
        self._recent: deque[tuple[float, int]] = deque()
        self.queue_depth = 0
        self.rejected = 0
        self.started = time.time()

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, _Hist(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, kind: str, size: int) -> None:
        with self._lock:
            self.batch_size.setdefault(kind, _Hist(BATCH_BUCKETS)).observe(size)

    def tokens(self, generated: int, prompt: int = 0) -> None:
        now = time.time()
        with self._lock:
            self.tokens_total += generated
            self.prompt_tokens_total += prompt
            self._recent.append((now, generated))

    def texts(self, mode: str, n: int) -> None:
        with self._lock:
            self.texts_total[mode] += n

    def tokens_per_second(self, window: float = 60.0) -> float:
        now = time.time()
        with self._lock:
            while self._recent and self._recent[0][0] < now - window:
                self._recent.popleft()
            if not self._recent:
                return 0.0
            span = max(1.0, now - self._recent[0][0])
            return sum(n for _, n in self._recent) / span

    def render(self) -> str:
        tps = self.tokens_per_second()
        with self._lock:
            out = ["# HELP tickerpulse_requests_total HTTP requests by route and status.",
                   "# TYPE tickerpulse_requests_total counter"]
            out += [f'tickerpulse_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
            out += ["# HELP tickerpulse_request_seconds Request latency by route.",
                    "# TYPE tickerpulse_request_seconds histogram"]
            for r, h in sorted(self.latency.items()):
                out += h.lines("tickerpulse_request_seconds", f'route="{r}"')
            out += ["# HELP tickerpulse_batch_size Rows per model batch.", "# TYPE tickerpulse_batch_size histogram"]
            for k, h in sorted(self.batch_size.items()):
                out += h.lines("tickerpulse_batch_size", f'kind="{k}"')
            out += ["# HELP tickerpulse_generated_tokens_total Tokens generated.",
                    "# TYPE tickerpulse_generated_tokens_total counter",
                    f"tickerpulse_generated_tokens_total {self.tokens_total}",
                    "# HELP tickerpulse_prompt_tokens_total Prompt tokens processed.",
                    "# TYPE tickerpulse_prompt_tokens_total counter",
                    f"tickerpulse_prompt_tokens_total {self.prompt_tokens_total}",
                    "# HELP tickerpulse_tokens_per_second Generated tokens per second over the last minute.",
                    "# TYPE tickerpulse_tokens_per_second gauge",
                    f"tickerpulse_tokens_per_second {tps:.3f}",
                    "# HELP tickerpulse_sentiment_texts_total Texts judged by /v1/sentiment, by mode.",
                    "# TYPE tickerpulse_sentiment_texts_total counter"]
            out += [f'tickerpulse_sentiment_texts_total{{mode="{m}"}} {n}' for m, n in sorted(self.texts_total.items())]
            out += ["# HELP tickerpulse_queue_depth Requests waiting for the model.",
                    "# TYPE tickerpulse_queue_depth gauge", f"tickerpulse_queue_depth {self.queue_depth}",
                    "# HELP tickerpulse_rejected_total Requests refused with 429 (queue full).",
                    "# TYPE tickerpulse_rejected_total counter", f"tickerpulse_rejected_total {self.rejected}",
                    "# HELP tickerpulse_uptime_seconds Seconds since start.", "# TYPE tickerpulse_uptime_seconds gauge",
                    f"tickerpulse_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(out) + "\n"
