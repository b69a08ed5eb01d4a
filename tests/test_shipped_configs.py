"""Every shipped config in configs/ loads into a config class of the package, and names its command on top.

Generic on purpose: a new `configs/*.yaml` is picked up without editing this test. Config classes are found
by scanning the package source for `class X(StrictModel)` (no heavy import needed to find them); a YAML
passes when at least one of them validates it (all are extra=forbid, so a stray key fails every class).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tickerpulse.config import ConfigError, StrictModel, build, load_yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "tickerpulse"
CONFIGS = sorted((ROOT / "configs").glob("*.y*ml")) if (ROOT / "configs").is_dir() else []
_CLASS = re.compile(r"^class (\w+)\(StrictModel\)", re.M)


def config_classes() -> list[type[StrictModel]]:
    """Top-level config classes (names ending in Config) defined anywhere in the package."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        names = [n for n in _CLASS.findall(path.read_text(encoding="utf-8")) if n.endswith("Config")]
        if not names:
            continue
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        try:
            mod = importlib.import_module(module)
        except ImportError:  # a module behind an optional extra that is not installed
            continue
        found += [getattr(mod, n) for n in names]
    return found


@pytest.mark.skipif(not CONFIGS, reason="no configs/*.yaml shipped yet")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path):
    data = load_yaml(path)
    assert isinstance(data, dict) and data, f"{path.name} is empty"
    errors = []
    for cls in config_classes():
        try:
            build(cls, data, source=path.name)
            break
        except ConfigError as exc:
            errors.append(f"{cls.__name__}: {exc}")
    else:
        pytest.fail(f"{path.name} fits no config class:\n" + "\n".join(errors))


@pytest.mark.skipif(not CONFIGS, reason="no configs/*.yaml shipped yet")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_names_its_command(path: Path):
    """STYLE: the command that uses a config is written on top of it, and that verb exists."""
    from typer.testing import CliRunner

    from tickerpulse.cli.main import app

    head = "\n".join(line for line in path.read_text().splitlines()[:10] if line.startswith("#"))
    m = re.search(r"tickerpulse ([a-z][\w-]*)", head)
    assert m, f"{path.name}: its first comment lines should show the command, e.g. `tickerpulse train --config ...`"
    res = CliRunner().invoke(app, [m.group(1), "--help"])
    assert res.exit_code == 0, f"{path.name} names `tickerpulse {m.group(1)}`, which is not a command"


def test_config_classes_are_found():
    names = {c.__name__ for c in config_classes()}
    assert "TrainConfig" in names
