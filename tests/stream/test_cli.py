"""The stream CLI: shipped config loads, status, loud errors for unknown or unavailable backends, and
user errors as one red line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tickerpulse.config import ConfigError, load
from tickerpulse.stream import registry
from tickerpulse.stream.config import StreamConfig

ROOT = Path(__file__).resolve().parents[2]


def tp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tickerpulse.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_shipped_config_loads_and_matches_defaults() -> None:
    cfg = load(StreamConfig, ROOT / "configs" / "stream.yaml")
    assert cfg == StreamConfig()
    assert cfg.db == Path("tickerpulse-stream/store.duckdb") and cfg.dead_letter_topic == "financial_raw_text.dlq"


def test_names_flag_and_key_switch_company_names() -> None:
    """`names` is on unless `--no-names` (or `names: false` / `--set names=false`) says otherwise; an unset
    flag leaves the YAML's value."""
    from tickerpulse.cli.stream import _config

    assert _config(None, None).names and _config(None, None, names=None).names
    assert not _config(None, None, names=False).names and not _config(None, ["names=false"]).names
    assert _config(None, ["names=false"], names=True).names


def test_registry_names_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"sqlite", "kafka"} <= set(registry.names("bus")) and "sqlite" in registry.available("bus")
    assert "duckdb" in registry.available("store") and "local" in registry.available("processor")
    with pytest.raises(ConfigError, match="--bus 'nats' is unknown"):
        registry.hook("bus", "nats")
    monkeypatch.setitem(registry._MODULES["processor"], "ghost", "tickerpulse.stream.no_such_module")
    with pytest.raises(ConfigError, match="not available in this build"):
        registry.hook("processor", "ghost")
    with pytest.raises(ConfigError, match="dead"):
        load(StreamConfig, None, {"topic": "t", "dead_letter_topic": "t"})


def test_produce_process_status(tmp_path: Path) -> None:
    d = tmp_path / "s"
    r = tp("stream", "produce", "--dir", str(d), "--speed", "0")  # the packaged sample corpus
    assert r.returncode == 0, r.stderr
    assert "produced 48 posts" in r.stdout
    r = tp("stream", "process", "--dir", str(d), "--scorer", "vader", "--until-idle", "0.5")
    assert r.returncode == 0, r.stderr
    r = tp("stream", "status", "--dir", str(d), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["lag_records"] == 0 and st["counts"]["posts"] == 48 and st["counts"]["docs"] >= 48
    assert st["heartbeats"]["processor"]["status"] == "stopped"
    r = tp("stream", "status", "--dir", str(d))
    assert "lag 0" in r.stdout and "48 posts" in r.stdout


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    r = tp("stream", "run", "--file", str(tmp_path / "missing.jsonl"), "--dir", str(tmp_path))
    assert r.returncode == 2 and "replay file not found" in r.stderr and "Traceback" not in r.stderr
    r = tp("stream", "process", "--dir", str(tmp_path), "--bus", "nats")
    assert r.returncode == 2 and "--bus 'nats' is unknown" in r.stderr
    r = tp("stream", "status", "--dir", str(tmp_path), "--set", "max_recordz=3")
    assert r.returncode == 2 and "did you mean 'max_records'" in r.stderr
