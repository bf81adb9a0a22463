"""Imports point one way: api -> tiering -> cold -> warm -> hot; SDKs stay in their module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["hot", "warm", "cold", "tiering", "api"]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_only_lower_layers():
    for rank, package in enumerate(ORDER):
        higher = set(ORDER[rank + 1 :])
        for path in (ROOT / package).rglob("*.py"):
            bad = imported_packages(path) & higher
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (a higher layer)"


def test_object_store_sdks_only_in_warm_storage():
    for package in ORDER:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "warm" / "storage.py":
                continue
            text = path.read_text()
            assert "boto3" not in imported_packages(path), path
            assert "S3FileSystem" not in text, path
