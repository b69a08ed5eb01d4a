"""README starts with the two commands, and every command it shows exists (make targets, CLI verbs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickerpulse.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if (ROOT / "docs").is_dir() else [ROOT / "README.md"]
_BLOCK = re.compile(r"```(?:bash|sh|shell|console)?\n(.*?)```", re.S)


def commands(path: Path) -> list[str]:
    """Command lines in the fenced shell blocks of a markdown file (comments and continuations handled)."""
    out = []
    for block in _BLOCK.findall(path.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.sub(r"\s+#.*$", "", line)  # trailing comment
            if line and not line.startswith("#"):
                out.append(line)
    return out


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def test_readme_starts_with_the_two_commands():
    first = _BLOCK.search(README)
    assert first is not None, "README has no command block"
    heading = README.find("\n## ")
    assert heading == -1 or README.index(first.group(0)) < heading, "the two commands must come before any section"
    lines = [ln.split("#")[0].strip() for ln in first.group(1).splitlines() if ln.strip()]
    assert lines == ["make demo", "make test"]


def _make_calls() -> list[tuple[str, str]]:
    return [(p.name, t) for p in DOCS for cmd in commands(p) if cmd.startswith("make ")
            for t in shlex.split(cmd)[1:] if "=" not in t and not t.startswith("-")]


@pytest.mark.parametrize("doc,target", _make_calls())
def test_make_targets_exist(doc, target):
    assert target in make_targets(), f"{doc} runs `make {target}` but the Makefile has no such target"


def _cli_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for p in DOCS:
        for cmd in commands(p):
            if cmd.startswith("tickerpulse "):
                words = [w for w in shlex.split(cmd)[1:]]
                path = []
                for w in words:  # the verb and its sub-command: words before the first option/argument
                    if w.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9-]*", w) or len(path) == 2:
                        break
                    path.append(w)
                calls.append((p.name, path))
    return calls


@pytest.mark.parametrize("doc,path", _cli_calls(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_cli_commands_exist(doc, path):
    res = CliRunner().invoke(app, [*path, "--help"])
    if res.exit_code != 0 and len(path) == 2:  # the second word was an argument, not a sub-command
        res = CliRunner().invoke(app, [path[0], "--help"])
    assert res.exit_code == 0, f"{doc}: `tickerpulse {' '.join(path)}` is not a command:\n{res.output}"
