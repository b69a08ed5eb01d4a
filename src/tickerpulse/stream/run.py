"""`tickerpulse stream run`: source + processor + dashboard as child processes of one supervisor.

The supervisor writes the resolved config to `<dir>/stream.yaml` (so the folder says how it was run and
each child reads the same settings), starts the children with the same Python, prints the dashboard URL
and waits. Ctrl-C / SIGTERM stops the children in order (producer, processor, dashboard) with SIGTERM and a
grace period (each finishes its batch and commits), then SIGKILL. A processor that dies (a crash, an OOM
kill) is restarted up to `max_restarts` times: the bus re-delivers what it had not committed. One that
exits because it cannot work as configured (exit code 2: a config error; `EXIT_SCORER_FATAL`: its scorer
refused it, e.g. a wrong API key) is not restarted: the same start would fail the same way, so the
supervisor stops the pipeline and returns 1.

`exit_when_done` (tests, benchmarks): once the producer has finished and the processor has committed
everything on the topic, stop and return.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tickerpulse.stream.config import StreamConfig
from tickerpulse.stream.scoring import EXIT_SCORER_FATAL

log = logging.getLogger("tickerpulse.stream.run")
# Exit codes of a processor that would fail the same way again (restarting it would only loop).
NO_RESTART = {2: "a configuration error", EXIT_SCORER_FATAL: "the scorer refused it"}


def write_config(cfg: StreamConfig, path: Path | None = None) -> Path:
    """Write the resolved config as YAML (what the children and `--config` read)."""
    path = path or Path(cfg.dir) / "stream.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(mode="json")
    path.write_text("# resolved by `tickerpulse stream run`; children read it with --config\n"
                    + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str) -> list[str]:
    """argv of a tickerpulse sub-command run with this interpreter."""
    return [sys.executable, "-m", "tickerpulse.cli.main", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(self.argv, env=env)
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs: killing it", self.name, grace)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def caught_up(cfg: StreamConfig) -> bool:
    """True when the processor group has committed every record on the topic."""
    from tickerpulse.stream import registry

    bus = registry.open_bus(cfg)
    try:
        ends = bus.end_offsets(cfg.topic)
        done = bus.committed(cfg.group, cfg.topic)
        return all(done.get(p, 0) >= end for p, end in ends.items())
    finally:
        bus.close()


def supervise(cfg: StreamConfig, producer_args: Sequence[str], *, port: int = 8050, host: str = "127.0.0.1",
              dashboard: bool = True, exit_when_done: bool = False, max_restarts: int = 5,
              stop: threading.Event | None = None, announce: Callable[[str], None] = print) -> int:
    """Run producer + processor (+ dashboard) until `stop`, a signal, or (with `exit_when_done`) the end
    of the source. Returns 0, or 1 if a child failed for good."""
    stop = stop or threading.Event()
    conf = write_config(cfg)
    children = [Child("producer", cli("stream", "produce", "--config", str(conf), *producer_args)),
                Child("processor", cli("stream", "process", "--config", str(conf)))]
    if dashboard:
        children.append(Child("dashboard", cli("dashboard", "--config", str(conf), "--host", host, "--port", str(port))))
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    # The bus must exist before the processor subscribes and the producer appends.
    from tickerpulse.stream import registry

    bus = registry.open_bus(cfg)
    bus.ensure_topics([cfg.topic, cfg.dead_letter_topic])
    bus.close()
    for c in children:
        c.start()
    if dashboard:
        announce(f"dashboard: http://{host}:{port}/  (Ctrl-C stops the pipeline)")
    rc = 0
    producer, processor = children[0], children[1]
    producer_done = False
    try:
        while not stop.wait(0.5):
            if not producer_done and not producer.alive():
                producer_done = True
                if producer.proc.returncode != 0:
                    announce(f"producer exited with code {producer.proc.returncode}")
                    rc = 1
                else:
                    announce("producer finished: the source is exhausted")
            if not processor.alive():
                code = processor.proc.returncode
                if code in NO_RESTART:
                    announce(f"processor exited with code {code} ({NO_RESTART[code]}, see its error above): "
                             "not restarting it; fix the cause and run again")
                    rc = 1
                    break
                if processor.restarts >= max_restarts:
                    announce(f"processor exited with code {code}; restarted {max_restarts} times already: giving up")
                    rc = 1
                    break
                processor.restarts += 1
                announce(f"processor exited with code {code}: restarting ({processor.restarts}/{max_restarts})")
                processor.start()
            if dashboard and not children[2].alive():
                announce(f"dashboard exited with code {children[2].proc.returncode}")
                rc = 1
                break
            if exit_when_done and producer_done and caught_up(cfg):
                announce("processor caught up: stopping")
                break
    finally:
        for c in children:
            c.stop()
    return rc
