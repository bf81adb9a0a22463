"""Provisioning with child workflows: one account, several resources in parallel.

``provision_account`` starts one ``provision_resource`` child per resource
(a database, a bucket, a DNS name) and waits for all of them
(``asyncio.gather`` replays deterministically). The cloud API is flaky, and
for a few requests it stays down: that child's retries run out, it fails,
and the parent rolls back and fails with ``ChildWorkflowFailed``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tierflow import ChildWorkflowFailed, RetryPolicy, WorkflowContext, workflow
from tierflow.examples.flaky import FlakyService

__all__ = ["cloud", "provision_account", "provision_resource"]

cloud = FlakyService("cloud", flaky_rate=0.25, max_failures=2, down_rate=0.02)


def allocate(resource_id: str, kind: str) -> str:
    """Ask the cloud API for the resource (flaky, sometimes down)."""
    cloud.call(resource_id)
    return f"{kind}:{resource_id}"


def configure(handle: str) -> str:
    """Apply the configuration."""
    return f"configured {handle}"


def validate_request(account: str, resources: list[str]) -> int:
    """Check the request; returns how many resources it asks for."""
    return len(resources)


def roll_back(account: str) -> str:
    """Delete whatever was created."""
    return f"rolled back {account}"


@workflow
async def provision_resource(ctx: WorkflowContext, r: dict[str, Any]) -> str:
    """Allocate one resource (retried with backoff), then configure it."""
    handle = await ctx.step(
        "allocate",
        allocate,
        r["id"],
        r["kind"],
        retry=RetryPolicy(max_attempts=4, initial_interval=30.0, backoff_coefficient=2.0),
    )
    done: str = await ctx.step("configure", configure, handle)
    return done


@workflow
async def provision_account(ctx: WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
    """Provision every resource of an account as children; roll back if one fails."""
    ctx.set_attributes(customer=req["customer"])
    await ctx.step("validate", validate_request, req["id"], req["resources"])
    try:
        made = await asyncio.gather(
            *(
                ctx.child(provision_resource, {"id": f"{req['id']}-{kind}", "kind": kind})
                for kind in req["resources"]
            )
        )
    except ChildWorkflowFailed:
        await ctx.step("rollback", roll_back, req["id"])
        raise
    return {"account": req["id"], "resources": made}
