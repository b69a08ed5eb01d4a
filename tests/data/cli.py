"""Run the real `tickerpulse` console script path in-process (fast enough for property tests).

`tickerpulse.cli.main:main` is `sys.exit(run_app(app))`: `run_app` turns expected errors (DataError, ...)
into one red line and exit 2. CliRunner's `invoke` skips that layer, so this helper calls `run_app` itself
inside CliRunner's output capture. Anything unexpected propagates out as the exception it is.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from tickerpulse.cli._errors import run_app
from tickerpulse.cli.main import app


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path) -> Result:
    """`tickerpulse ARGS` through `run_app`, as the console script runs it; wide lines, no colour."""
    runner = CliRunner()
    with runner.isolation(env={"COLUMNS": "2000", "NO_COLOR": "1"}) as (out, err, _):
        argv = sys.argv
        sys.argv = ["tickerpulse", *map(str, args)]
        try:
            code = run_app(app)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
        return Result(code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))


def error_lines(res: Result) -> list[str]:
    """The non-empty stderr lines (each should be one `file:line: reason`)."""
    return [line for line in res.stderr.splitlines() if line.strip()]


def assert_file_line_errors(res: Result, names: set[str], header: str | None = None) -> None:
    """Exit 0 or 2, no traceback, and on 2 every stderr line is `[error: ]FILE:LINE: reason` for one of `names`
    (after the command's own `header` line, e.g. distill's run summary, when given)."""
    assert res.code in (0, 2), res.output
    assert "Traceback" not in res.output, res.output
    if res.code == 2:
        lines = [line for line in error_lines(res) if header is None or not line.startswith(header)]
        assert lines, res.output
        pattern = re.compile(r"^(error: )?(" + "|".join(map(re.escape, names)) + r"):\d+: \S")
        bad = [line for line in lines if not pattern.match(line)]
        assert not bad, res.output
