"""Package attributes imported on first use (PEP 562).

Used by packages whose public names live in modules that are slow to import
(pyiceberg, the tiering jobs): a process that needs one module of the package,
such as the SQL worker, then imports only that module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name comes from its module on first use.

    Args:
        package: The package's ``__name__``.
        homes: Public name -> the package's module that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
