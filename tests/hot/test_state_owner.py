"""One owner for a running instance's state: only ``hot/executor.py`` assigns its fields.

Other modules change an :class:`~tierflow.hot.executor.Execution` through its
methods (``request_cancel``, ``terminate``, ``count_step``, ``set_attributes``,
...). This reads every module of ``hot/`` with :mod:`ast` and fails on an
assignment (``=``, ``+=``, annotated, ``del``; to the field or to an item of
it) whose target is a field of ``Execution`` on anything but ``self`` of a
class that is not an ``Execution``: such a ``self`` is that class's own state.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

HOT = Path(__file__).resolve().parents[2] / "hot"
OWNER = HOT / "executor.py"

# Objects of other types whose attributes share a name with a field of
# Execution: (module, the assigned expression), each with what it is.
NOT_AN_EXECUTION = {
    ("stream.py", "feed.task"),  # a change-feed subscriber's task
}


def execution_fields() -> set[str]:
    """The names ``Execution.__init__`` assigns on ``self``."""
    tree = ast.parse(OWNER.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Execution")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    fields = {
        t.attr
        for node in ast.walk(init)
        for t in _targets(node)
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    assert {"step_count", "cancel_requested", "cancel_reason", "terminated", "task"} <= fields
    return fields


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return [e for t in node.targets for e in _flatten(t)]
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    if isinstance(node, ast.Delete):
        return [e for t in node.targets for e in _flatten(t)]
    return []


def _flatten(target: ast.expr) -> list[ast.expr]:
    """``a.x, b.y = ...`` assigns two targets."""
    if isinstance(target, ast.Tuple | ast.List):
        return [e for t in target.elts for e in _flatten(t)]
    if isinstance(target, ast.Starred):
        return _flatten(target.value)
    return [target]


def _field_target(target: ast.expr) -> ast.Attribute | None:
    """``x.f`` for a target ``x.f`` or ``x.f[...]``."""
    if isinstance(target, ast.Subscript):
        target = target.value
    return target if isinstance(target, ast.Attribute) else None


def _is_execution_class(cls: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and b.id == "Execution" for b in cls.bases)


def _assignments(tree: ast.Module) -> Iterator[tuple[ast.Attribute, ast.ClassDef | None]]:
    """Every assigned attribute target, with the class it is assigned in (if any)."""

    def walk(
        node: ast.AST, cls: ast.ClassDef | None
    ) -> Iterator[tuple[ast.Attribute, ast.ClassDef | None]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.ClassDef) else cls
            for t in _targets(child):
                attr = _field_target(t)
                if attr is not None:
                    yield attr, inner
            yield from walk(child, inner)

    yield from walk(tree, None)


def foreign_assignments(path: Path, fields: set[str]) -> list[str]:
    """``module:line: target`` for each assignment to an Execution field in ``path``."""
    found = []
    for attr, cls in _assignments(ast.parse(path.read_text())):
        if attr.attr not in fields:
            continue
        on_self = isinstance(attr.value, ast.Name) and attr.value.id == "self"
        if on_self and (cls is None or not _is_execution_class(cls)):
            continue  # another class's own attribute of the same name
        text = ast.unparse(attr)
        if (path.name, text) in NOT_AN_EXECUTION:
            continue
        found.append(f"hot/{path.name}:{attr.lineno}: {text}")
    return found


def test_only_the_executor_assigns_execution_fields() -> None:
    fields = execution_fields()
    found = [
        hit
        for path in sorted(HOT.glob("*.py"))
        if path != OWNER
        for hit in foreign_assignments(path, fields)
    ]
    assert not found, (
        "assign Execution's fields only in hot/executor.py (add a method there):\n"
        + "\n".join(found)
    )


def test_the_check_sees_each_form(tmp_path: Path) -> None:
    fields = execution_fields()
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(ex, self):\n"
        "    ex.step_count += 1\n"
        "    ex.cancel_requested, ex.cancel_reason = True, 'r'\n"
        "    self._ex.terminated = True\n"
        "    ex.attributes['k'] = 1\n"
        "    del ex.query_handlers['q']\n"
        "class R(Execution):\n"
        "    def g(self):\n"
        "        self.replayed += 1\n"
        "class Other:\n"
        "    def __init__(self):\n"
        "        self.task = None\n"
    )
    hits = [h.split(": ", 1)[1] for h in foreign_assignments(bad, fields)]
    assert hits == [
        "ex.step_count",
        "ex.cancel_requested",
        "ex.cancel_reason",
        "self._ex.terminated",
        "ex.attributes",
        "ex.query_handlers",
        "self.replayed",
    ]
