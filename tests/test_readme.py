"""The README's example runs as written, and the docs name what exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def example() -> str:
    section = README.split("## A workflow", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_readme_example_runs_as_written_twice(tmp_path: Path):
    script = tmp_path / "example.py"
    script.write_text(example())
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # the second run finds the finished instance
        out = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert out.returncode == 0, out.stderr
        assert "'status': 'completed', 'tracking': 'TRACK-42'" in out.stdout
        assert "workflow.completed" in out.stdout
    assert (tmp_path / "tierflow-data" / "hot" / "index.sqlite").exists()


def test_readme_commands_exist_in_makefile():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lint", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cli_commands_in_readme_exist():
    from tierflow.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    for cmd, sub in re.findall(r"^tierflow (\w[\w-]*)(?: (\w+))?", README, re.M):
        if cmd in groups:
            group = groups[cmd]
            assert group is not None
            subs = {c.name or c.callback.__name__ for c in group.registered_commands}  # type: ignore[union-attr]
            subs |= {g.name for g in group.registered_groups}  # tierflow compliance retention
            assert sub in subs, f"tierflow {cmd} {sub}"
            continue
        assert cmd in names | {"list"}, cmd


def test_layout_map_names_modules_that_exist():
    section = README.split("## Layout", 1)[1].split("```", 2)[1]
    package = None
    sub = None  # a sub-package (``  sql/``), whose modules are indented deeper
    named = []
    for line in section.splitlines():
        top = re.match(r"^(\w+)/", line)
        if top:
            package, sub = top.group(1), None
        inner = re.match(r"^  (\w+)/\s", line)
        if inner:
            sub = f"{package}/{inner.group(1)}"
            assert (ROOT / sub / "__init__.py").exists(), sub
            continue
        if sub is not None and not line.startswith("    "):
            sub = None
        where = sub if sub is not None and line.startswith("    ") else package
        named += [(where, m) for m in re.findall(r"\b(\w+)\.py\b", line)]
    assert len(named) >= 15
    for package, module in named:
        assert (ROOT / str(package) / f"{module}.py").exists(), f"{package}/{module}.py"
