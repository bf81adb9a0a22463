"""The ``@workflow`` decorator and the registry of workflow definitions."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, overload

from tierflow.hot.errors import InvalidArgument, WorkflowNotFound

__all__ = ["Registry", "WorkflowDefinition", "workflow"]

WorkflowFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class WorkflowDefinition:
    """A registered workflow: its type name and its ``async def`` function.

    Attributes:
        name: The workflow type, stored in every instance and event.
        fn: ``async def fn(ctx)`` or ``async def fn(ctx, input)``.
        takes_input: Whether ``fn`` accepts the input argument.
    """

    name: str
    fn: WorkflowFn
    takes_input: bool

    def __call__(self, ctx: Any, input: Any = None) -> Awaitable[Any]:
        """Invoke the workflow function (the executor does this)."""
        return self.fn(ctx, input) if self.takes_input else self.fn(ctx)


def _define(fn: WorkflowFn, name: str | None) -> WorkflowDefinition:
    if not inspect.iscoroutinefunction(fn):
        raise InvalidArgument(f"@workflow needs an 'async def' function, got {fn!r}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        raise InvalidArgument(f"workflow {fn.__name__} must take the context as first argument")
    return WorkflowDefinition(name=name or fn.__name__, fn=fn, takes_input=len(params) >= 2)


@overload
def workflow(fn: WorkflowFn, /) -> WorkflowDefinition: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[WorkflowFn], WorkflowDefinition]: ...


def workflow(
    fn: WorkflowFn | None = None, /, *, name: str | None = None
) -> WorkflowDefinition | Callable[[WorkflowFn], WorkflowDefinition]:
    """Declare an ``async def`` function as a workflow.

    Use as ``@workflow`` (the type name is the function name) or
    ``@workflow(name="orders.process")``.
    """
    if fn is not None:
        return _define(fn, name)

    def deco(f: WorkflowFn) -> WorkflowDefinition:
        return _define(f, name)

    return deco


class Registry:
    """The workflow types one engine can run, by name."""

    def __init__(self, definitions: Iterable[WorkflowDefinition | WorkflowFn] = ()) -> None:
        self._by_name: dict[str, WorkflowDefinition] = {}
        for d in definitions:
            self.add(d)

    def add(self, definition: WorkflowDefinition | WorkflowFn) -> WorkflowDefinition:
        """Register a definition (a bare ``async def`` is wrapped with ``@workflow``)."""
        if not isinstance(definition, WorkflowDefinition):
            definition = _define(definition, None)
        existing = self._by_name.get(definition.name)
        if existing is not None and existing.fn is not definition.fn:
            raise InvalidArgument(f"two different workflows are named {definition.name!r}")
        self._by_name[definition.name] = definition
        return definition

    def names(self) -> list[str]:
        """Return the registered type names, sorted."""
        return sorted(self._by_name)

    def resolve(self, ref: WorkflowDefinition | WorkflowFn | str) -> WorkflowDefinition:
        """Return the definition for a definition, function or type name.

        Raises:
            WorkflowNotFound: The type is not registered; the message lists the known ones.
        """
        if isinstance(ref, WorkflowDefinition):
            name = ref.name
        elif isinstance(ref, str):
            name = ref
        else:
            name = getattr(ref, "__name__", repr(ref))
        found = self._by_name.get(name)
        if found is None:
            known = self.names()
            raise WorkflowNotFound(
                f"unknown workflow type {name!r}; known types: {', '.join(known) or '(none)'}",
                known_types=known,
            )
        return found

    def get(self, name: str) -> WorkflowDefinition | None:
        """Return the definition named ``name``, or None."""
        return self._by_name.get(name)
