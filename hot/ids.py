"""Workflow ids: validation and the mapping from an id to its instance file.

An id never becomes a path by itself: it is validated against a strict
pattern first, and the file name is derived from it with a hash shard so that
no id can name a directory, a parent, or an over-long file name.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

from hot.errors import InvalidWorkflowId

__all__ = ["WORKFLOW_ID_PATTERN", "instance_path", "new_run_id", "validate_workflow_id"]

WORKFLOW_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")

# Longest id kept verbatim in a file name; longer ids are cut and suffixed with
# a hash so the name stays well under the 255-byte NAME_MAX of common filesystems.
_MAX_VERBATIM = 120


def validate_workflow_id(workflow_id: object) -> str:
    """Return ``workflow_id`` if it is a valid id, else raise InvalidWorkflowId.

    Args:
        workflow_id: The candidate id.

    Raises:
        InvalidWorkflowId: Not a string, or not matching
            ``^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$``.
    """
    if not isinstance(workflow_id, str):
        raise InvalidWorkflowId(f"workflow id must be a string, not {type(workflow_id).__name__}")
    if WORKFLOW_ID_PATTERN.fullmatch(workflow_id) is None:
        shown = workflow_id if len(workflow_id) <= 40 else workflow_id[:40] + "..."
        raise InvalidWorkflowId(
            f"invalid workflow id {shown!r} (length {len(workflow_id)}): ids are 1-255 "
            "characters of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit"
        )
    return workflow_id


def instance_path(hot_dir: Path, workflow_id: str) -> Path:
    """Return the SQLite file that holds ``workflow_id`` under ``hot_dir``.

    Files are spread over 256 shard directories by hash so no directory grows
    past a few thousand entries at typical hot-tier sizes.
    """
    validate_workflow_id(workflow_id)
    digest = hashlib.sha1(workflow_id.encode(), usedforsecurity=False).hexdigest()
    name = workflow_id
    if len(name) > _MAX_VERBATIM:
        name = f"{workflow_id[:100]}~{digest[:16]}"
    return hot_dir / digest[:2] / f"{name}.sqlite"


def new_run_id() -> str:
    """Return a fresh run id (a UUID4 in hex)."""
    return uuid.uuid4().hex
