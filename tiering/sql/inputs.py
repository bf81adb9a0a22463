"""What a query takes besides its text: placeholder values and the time-travel point."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tierflow.hot.errors import InvalidArgument

__all__ = ["AsOf", "as_of_point", "checked_params"]

AsOf = datetime | str | int
"""A time-travel point: an aware ``datetime``, ISO 8601 text, or a cold snapshot id."""

_PARAM_TYPES = (type(None), bool, int, float, str, bytes, datetime, date, Decimal)
_MAX_SNAPSHOT = 2**63 - 1


def checked_params(params: Any) -> Any:
    """Check placeholder values: plain values only (they cross to the worker process)."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        values = list(params.values())
        if not all(isinstance(k, str) for k in params):
            raise InvalidArgument("SQL params: a mapping's keys must be names")
        out: Any = dict(params)
    elif isinstance(params, Sequence) and not isinstance(params, str | bytes):
        values = list(params)
        out = list(params)
    else:
        raise InvalidArgument("SQL params must be a sequence or a mapping")
    for v in values:
        if isinstance(v, list | tuple):
            if all(isinstance(x, _PARAM_TYPES) for x in v):
                continue
        elif isinstance(v, _PARAM_TYPES):
            continue
        raise InvalidArgument(f"SQL params: {type(v).__name__} is not a SQL value")
    try:
        pickle.dumps(out)
    except Exception as exc:
        raise InvalidArgument(f"SQL params cannot be sent: {exc}") from None
    return out


def as_of_point(value: AsOf | None) -> tuple[str, Any] | None:
    """Normalise ``as_of``: ``("time", epoch ms)`` or ``("snapshot", id)``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument("as_of must be a datetime, an ISO 8601 string or a snapshot id")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            if len(text) > 19:
                raise InvalidArgument("as_of: a snapshot id has at most 19 digits")
            value = int(text)
        else:
            try:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidArgument(
                    f"as_of {text[:40]!r}: not an ISO 8601 time or snapshot id"
                ) from None
    if isinstance(value, int):
        if not 0 <= value <= _MAX_SNAPSHOT:
            raise InvalidArgument("as_of: a snapshot id is a 64-bit number")
        return ("snapshot", value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgument("as_of must be timezone-aware (e.g. ...+00:00)")
        try:
            return ("time", int(value.timestamp() * 1000))
        except (OverflowError, OSError, ValueError):
            raise InvalidArgument("as_of: the time is out of range") from None
    raise InvalidArgument("as_of must be a datetime, an ISO 8601 string or a snapshot id")
