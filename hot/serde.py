"""JSON payloads: the one encoding used for inputs, results, and event payloads."""

from __future__ import annotations

import json
from typing import Any

from tierflow.hot.errors import PayloadError

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "decode", "encode"]

# Temporal's default blob limit is 2 MiB; a larger value in one row makes every
# replay and tiering batch pay for it, so we refuse it with a clear error.
DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


# One encoder for every payload: json.dumps with these options builds a new
# JSONEncoder per call, a measurable share of a workflow's CPU (several values each).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(
    value: Any,
    *,
    what: str,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    workflow_id: str | None = None,
) -> str:
    """Encode ``value`` as JSON text without optional whitespace.

    Args:
        value: Any JSON-serialisable value.
        what: Names the value in errors, e.g. "result of step 'charge'".
        max_bytes: Refuse encodings larger than this.
        workflow_id: Attached to errors.

    Raises:
        PayloadError: Not JSON-serialisable (names the offending type), NaN or
            infinity, or larger than ``max_bytes``.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable: {exc}", workflow_id=workflow_id
        ) from exc
    # UTF-8 takes at most 4 bytes a character: only a long text needs measuring.
    if len(text) * 4 <= max_bytes:
        return text
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise PayloadError(
            f"{what} is {size} bytes of JSON, over the {max_bytes}-byte payload limit",
            workflow_id=workflow_id,
        )
    return text


def decode(text: str | None) -> Any:
    """Decode JSON text written by :func:`encode`; None stays None."""
    if text is None:
        return None
    return json.loads(text)
