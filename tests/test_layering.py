"""Imports point one way: api -> tiering -> cold -> warm -> hot; SDKs stay in their module.

The folders install as one namespace: ``api/`` is ``tierflow``, ``hot/`` is
``tierflow.hot``, and so on. A package reaches the one below only through its
public names: no ``_private`` name (module, function, attribute) crosses a
package boundary.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["hot", "warm", "cold", "tiering", "api"]
SUBPACKAGES = {"hot", "warm", "cold", "tiering"}


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The syntax tree of ``path``, parsed once per test process (the tests only read it)."""
    return ast.parse(path.read_text())


@functools.cache
def nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of ``path``'s tree, walked once."""
    return tuple(ast.walk(parsed(path)))


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
    names: set[str] = set()
    for node in nodes(path):
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
    storage = ROOT / "warm" / "storage"
    assert (storage / "__init__.py").is_file(), "warm/storage/ is the package SDKs stay in"
    for package in ORDER:
        for path in (ROOT / package).rglob("*.py"):
            if path.parent == storage:
                continue
            text = path.read_text()
            assert "boto3" not in imported_packages(path), path
            assert "botocore" not in imported_packages(path), path
            assert "S3FileSystem" not in text, path


# Private names that belong to the standard library or to other libraries, and
# are fine to use anywhere.
_FOREIGN_PRIVATE = {"_replace", "_asdict", "_fields", "_exit", "_getframe"}


def private_names_defined(package: str) -> set[str]:
    """Every ``_name`` a package defines: functions, classes, attributes, module names."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        names.add(path.stem)
        for node in nodes(path):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_uses(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, name, package)`` of each ``x._name`` use and each import of a private name."""
    out: list[tuple[int, str, str | None]] = []
    for node in nodes(path):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if not node.attr.startswith("__"):
                out.append((node.lineno, node.attr, None))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            owner = package_of(node.module)
            parts = node.module.split(".")
            for part in parts:
                if part.startswith("_") and not part.startswith("__"):
                    out.append((node.lineno, part, owner))
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append((node.lineno, alias.name, owner))
    return out


def test_no_private_name_crosses_a_package_boundary():
    """A package uses only its own ``_private`` names; what others need is public API."""
    own = {p: private_names_defined(p) for p in ORDER}
    bad: list[str] = []
    for package in ORDER:
        for path in (ROOT / package).rglob("*.py"):
            for line, name, owner in private_uses(path):
                if owner is not None and owner != package:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {owner}")
                elif name not in own[package] and name not in _FOREIGN_PRIVATE:
                    bad.append(f"{path.relative_to(ROOT)}:{line} uses {name}, not defined here")
    assert not bad, "private names crossing a package boundary:\n" + "\n".join(bad)


def test_the_private_name_check_catches_a_reach_in(tmp_path):
    """The check above finds ``index._read`` written in a package that does not own it."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f(index):\n    return index._read('SELECT 1')\n")
    uses = [name for _, name, _ in private_uses(probe)]
    assert uses == ["_read"]
    assert "_read" not in private_names_defined("tiering")


# Sub-packages with a boundary of their own: what they use of the rest of their package (and
# of warm and cold) is public; their own private names stay inside.
UNITS = ("tiering/sql", "tiering/compliance", "warm/storage")


def private_names_in(folder: Path) -> set[str]:
    """Every ``_name`` the modules of one folder (recursively) define."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        names.add(path.stem)
        for node in nodes(path):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_sub_packages_use_only_public_names_of_their_package():
    bad: list[str] = []
    for unit in UNITS:
        folder = ROOT / unit
        if not folder.is_dir():
            continue
        own = private_names_in(folder)
        for path in folder.rglob("*.py"):
            for line, name, _ in private_uses(path):
                if name not in own and name not in _FOREIGN_PRIVATE:
                    bad.append(
                        f"{path.relative_to(ROOT)}:{line} uses {name}, not defined in {unit}"
                    )
        # ... and nothing outside the unit imports its private modules or names.
        dotted = "tierflow." + unit.replace("/", ".")
        for package in ORDER:
            for path in (ROOT / package).rglob("*.py"):
                if folder in path.parents:
                    continue
                for node in nodes(path):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(dotted):
                        private = [a.name for a in node.names if a.name.startswith("_")]
                        tail = (node.module or "")[len(dotted) :].split(".")
                        private += [p for p in tail if p.startswith("_")]
                        if private:
                            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {private}")
    assert not bad, "private names crossing a sub-package boundary:\n" + "\n".join(bad)
