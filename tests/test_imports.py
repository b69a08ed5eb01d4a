"""The import checker (`python -m tickerpulse.tools.imports`): this package passes it (stages import one way, no
circles); on small packages written here it finds upward imports (lazy, type-only and `import_module` ones
too), circles and unplaced stages, each with file:line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tickerpulse.tools.imports import check, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_imports_one_way_without_circles() -> None:
    proc = subprocess.run([sys.executable, "-m", "tickerpulse.tools.imports"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: "), proc.stdout


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package folder `root/tickerpulse` with `files` (relative path -> source) and every __init__.py."""
    pkg = root / "tickerpulse"
    for rel, source in {"__init__.py": "", **files}.items():
        path = pkg / rel
        for folder in [pkg, *reversed(path.relative_to(pkg).parents[:-1])]:
            (pkg / folder).mkdir(parents=True, exist_ok=True)
            (pkg / folder / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return pkg


def test_upward_imports_circles_and_unplaced_stages_are_reported_with_file_and_line(tmp_path, capsys) -> None:
    pkg = write_package(tmp_path, {
        "task/contract.py": """\
            def later():
                from tickerpulse.serve import app
            """,
        "models/load.py": "import tickerpulse.train.loop\n",
        "train/loop.py": "from tickerpulse.models.load import x\nfrom tickerpulse.task import contract\n",
        "data/formats.py": "from tickerpulse.data import hub\n",
        "data/hub.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .formats import Row
            """,
        "serve/app.py": "import importlib\nrun = importlib.import_module('tickerpulse.stream.run')\n",
        "stream/run.py": "from ..serve.app import create_app\n",
        "cli/main.py": "from tickerpulse.stream.run import go\nfrom tickerpulse import __version__\n",
        "extras/thing.py": "",
    })
    report = check(pkg)
    up = {(i.source, i.target, i.line, i.lazy, i.type_only) for i in report.upward}
    assert up == {("tickerpulse.task.contract", "tickerpulse.serve.app", 2, True, False),
                  ("tickerpulse.models.load", "tickerpulse.train.loop", 1, False, False),
                  ("tickerpulse.serve.app", "tickerpulse.stream.run", 2, False, False)}
    circles = {tuple((i.source, i.target) for i in c) for c in report.circles}
    assert circles == {
        (("tickerpulse.data.formats", "tickerpulse.data.hub"), ("tickerpulse.data.hub", "tickerpulse.data.formats")),
        (("tickerpulse.models.load", "tickerpulse.train.loop"), ("tickerpulse.train.loop", "tickerpulse.models.load")),
        (("tickerpulse.serve.app", "tickerpulse.stream.run"), ("tickerpulse.stream.run", "tickerpulse.serve.app")),
    }
    assert list(report.unplaced) == ["extras"]

    assert main(["--root", str(pkg)]) == 1
    out = capsys.readouterr().out
    assert (f"{pkg / 'task/contract.py'}:2: tickerpulse.task.contract imports tickerpulse.serve.app (lazy): "
            "upward: task comes before serve") in out
    assert (f"{pkg / 'data/formats.py'}:1: import circle: tickerpulse.data.formats -> tickerpulse.data.hub -> "
            "tickerpulse.data.formats") in out
    assert f"  {pkg / 'data/hub.py'}:3: tickerpulse.data.hub imports tickerpulse.data.formats (type-only)" in out
    assert f"{pkg / 'extras/__init__.py'}: stage 'extras' is not in the stage order" in out
    assert "ok:" not in out


def test_a_circle_is_shown_by_its_shortest_path(tmp_path) -> None:
    pkg = write_package(tmp_path, {
        "data/a.py": "from tickerpulse.data import b, c\n",
        "data/b.py": "from tickerpulse.data import c\n",
        "data/c.py": "def f():\n    from tickerpulse.data.a import x\n",
    })
    (circle,) = check(pkg).circles
    assert [(i.source, i.target, i.line) for i in circle] == [
        ("tickerpulse.data.a", "tickerpulse.data.c", 1), ("tickerpulse.data.c", "tickerpulse.data.a", 2)]


def test_a_package_that_follows_the_rules_passes(tmp_path, capsys) -> None:
    pkg = write_package(tmp_path, {
        "task/contract.py": "import json\nfrom tickerpulse.config import Strict\n",
        "config.py": "from pydantic import BaseModel\n",
        "data/formats.py": "from . import hub\nfrom ..task.contract import LABELS\n",
        "data/hub.py": "from tickerpulse.task import contract\n",
        "serve/app.py": "def routes():\n    from tickerpulse.serve import routes\n",
        "serve/routes.py": "from tickerpulse.data.formats import read\n",
        "recipe/run.py": "from tickerpulse.cli import main\n",
        "cli/main.py": "from tickerpulse.serve.app import routes\nfrom tickerpulse.tools import imports\n",
        "tools/imports.py": "import ast\n",
    })
    assert main(["--root", str(pkg)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("ok: 16 modules, 9 imports inside the package"), out


def test_a_file_that_does_not_parse_fails_the_check(tmp_path, capsys) -> None:
    pkg = write_package(tmp_path, {"data/broken.py": "def f(:\n"})
    assert main(["--root", str(pkg)]) == 1
    assert capsys.readouterr().out.startswith(f"{pkg / 'data/broken.py'}:1: ")


def test_the_root_must_be_a_package(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path)])
