"""Imports point one way: api -> tiering -> cold -> warm -> hot; SDKs stay in their module.

The folders install as one namespace: ``api/`` is ``tierflow``, ``hot/`` is
``tierflow.hot``, and so on. A package reaches the one below only through its
public names: no ``_private`` name (module, function, attribute) crosses a
package boundary.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["hot", "warm", "cold", "tiering", "api"]
SUBPACKAGES = {"hot", "warm", "cold", "tiering"}


def package_of(module: str) -> str | None:
    """Map an absolute module name to its folder (``tierflow.hot.x`` -> ``hot``)."""
    parts = module.split(".")
    if parts[0] != "tierflow":
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "api"


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """Our folders (``hot``, ...) that ``path`` imports, and other top-level names."""
    return {package_of(m) or m.split(".")[0] for m in imported_modules(path)}


def test_packages_import_only_lower_layers():
    for rank, package in enumerate(ORDER):
        higher = set(ORDER[rank + 1 :])
        for path in (ROOT / package).rglob("*.py"):
            bad = imported_packages(path) & higher
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (a higher layer)"
            old = {m.split(".")[0] for m in imported_modules(path)} & set(ORDER)
            assert not old, f"{path.relative_to(ROOT)} imports {sorted(old)} outside `tierflow`"


def test_object_store_sdks_only_in_warm_storage():
    for package in ORDER:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "warm" / "storage.py":
                continue
            text = path.read_text()
            assert "boto3" not in imported_packages(path), path
            assert "botocore" not in imported_packages(path), path
            assert "S3FileSystem" not in text, path
