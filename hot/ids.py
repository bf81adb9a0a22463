"""Workflow ids: validation.

Ids are checked against a strict pattern before anything touches disk, and
they never become paths at all: instance files get random names and the
index records which file holds which id (see ``hot/store.py``).
"""

from __future__ import annotations

import re
import uuid

from tierflow.hot.errors import InvalidWorkflowId

__all__ = ["WORKFLOW_ID_PATTERN", "new_run_id", "validate_workflow_id"]

WORKFLOW_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")


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


def new_run_id() -> str:
    """Return a fresh run id (a UUID4 in hex)."""
    return uuid.uuid4().hex
