"""The HTTP benchmark's floor: a FastAPI route that answers a constant.

Served by the same uvicorn configuration as ``tierflow serve`` (uvloop, h11, no
access log), it is what the same clients get from FastAPI alone: the ceiling of any
route, and so the floor our ``POST /v1/workflows`` is compared with.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/workflows", status_code=201)
async def constant() -> dict[str, Any]:
    """The shape of a start's answer, without starting anything."""
    return {"workflow_id": "constant", "status": "queued"}
