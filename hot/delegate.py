"""Methods that hand a call, unchanged, to an object the instance composes.

``Tierflow`` composes an ``Engine``, and the engine composes ``Reads`` and
``Control``; many public methods only pass their arguments on. Written out,
each such method repeats the callee's signature, and a new parameter (a list
filter, say) had to be added in three places that could drift apart. A
forwarded method takes its signature, types and docstring from the callee, so
there is one definition to change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["forward"]

P = ParamSpec("P")
R = TypeVar("R")


def forward(
    attribute: str, method: Callable[Concatenate[Any, P], R]
) -> Callable[Concatenate[Any, P], R]:
    """A method that calls ``method`` on ``self.<attribute>`` with the same arguments.

    Args:
        attribute: The composed object's attribute name on the instance (read at each call,
            so it may be set after construction).
        method: The callee's method, taken from its class (e.g. ``Engine.list``); its name,
            signature and docstring become the forwarded method's.

    Returns:
        A function to assign in a class body: ``list = forward("engine", Engine.list)``.
    """
    name = method.__name__

    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        target: Callable[P, R] = getattr(getattr(self, attribute), name)
        return target(*args, **kwargs)

    functools.update_wrapper(call, method)
    return call
