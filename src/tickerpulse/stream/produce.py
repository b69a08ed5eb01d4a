"""Put a source's posts on the bus: dedupe by post id, produce (key = post id), flush regularly."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tickerpulse.stream.bus.base import Bus
from tickerpulse.stream.schema import Post

log = logging.getLogger("tickerpulse.stream.produce")


@dataclass
class ProduceStats:
    produced: int = 0
    duplicates: int = 0
    seconds: float = 0.0


def run_source(posts: Iterable[Post] | Iterator[Post], bus: Bus, topic: str, *, stop: threading.Event | None = None,
               flush_every: int = 200, flush_s: float = 0.25, remember: int = 200_000,
               on_progress: Callable[[ProduceStats], None] | None = None) -> ProduceStats:
    """Produce every post once (a post id seen in the last `remember` is skipped). Flushes every
    `flush_every` posts, every `flush_s` seconds from a helper thread (so a post of a slow source never
    waits in the buffer for the next one), and at the end. The bus must be thread-safe (both are)."""
    stats = ProduceStats()
    seen: OrderedDict[str, None] = OrderedDict()
    t0 = time.monotonic()
    done = threading.Event()

    def flusher() -> None:
        while not done.wait(flush_s):
            try:
                bus.flush()
            except Exception as exc:  # the main loop's final flush reports persistent failures
                log.warning("background flush failed: %s", exc)

    th = threading.Thread(target=flusher, name="tp-flusher", daemon=True)
    th.start()
    try:
        for post in posts:
            if stop is not None and stop.is_set():
                break
            if post.id in seen:
                stats.duplicates += 1
                continue
            seen[post.id] = None
            if len(seen) > remember:
                seen.popitem(last=False)
            bus.produce(topic, post.id, post.to_bytes())
            stats.produced += 1
            if stats.produced % flush_every == 0:
                bus.flush()
                if on_progress:
                    stats.seconds = time.monotonic() - t0
                    on_progress(stats)
    finally:
        done.set()
        th.join()
        bus.flush()
        stats.seconds = time.monotonic() - t0
    return stats
