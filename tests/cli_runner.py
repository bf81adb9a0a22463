"""``tierflow ARGS --data-dir DATA`` in the test's own process, for CLI tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tierflow.cli import app
from typer.testing import CliRunner


class Cli:
    """Runs ``tierflow ARGS --data-dir DATA``; checks the exit code, returns (stdout, stderr)."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> tuple[str, str]:
        result = self.runner.invoke(app, [*args, "--data-dir", str(self.data)])
        assert result.exit_code == code, (args, result.exit_code, result.output, result.exception)
        return result.stdout, " ".join(result.stderr.split())  # rich wraps lines at 80 columns

    def json(self, *args: str, code: int = 0) -> Any:
        """The command's ``--json`` output, parsed."""
        out, _ = self(*args, "--json", code=code)
        return json.loads(out)
