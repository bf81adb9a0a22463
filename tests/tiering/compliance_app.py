"""Workflows of the compliance tests, and a program they run as a real subprocess (and kill).

Usage: python -m tests.tiering.compliance_app MODE DATA_DIR [ARGS...]

Modes:

- ``erase ID``: ``tf.compliance.erase(workflow_id=ID)``; prints the report as JSON.
- ``erase-customer C``: ``tf.compliance.erase(attribute={"customer": C})``; prints the report.
- ``retention NOW``: ``tf.compliance.apply_retention(now=NOW)``; prints the report.
- ``open``: starts like an application (a process start resumes interrupted erasures)
  and prints the instance count per tier.
- ``tier``: one tiering pass judged 2 h from now; prints the report.

Every mode but ``open`` opens the data directory without starting the scheduler, so only
the operation itself resumes an interrupted erasure.

Storage and catalog come from the environment (TIERFLOW_STORAGE_URL,
TIERFLOW_S3_ENDPOINT, TIERFLOW_CATALOG_URL, AWS_*), crash points from
TIERFLOW_CRASH_AT.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from typing import Any

from tierflow import RetryPolicy, Tierflow, WorkflowContext, workflow
from tierflow.tiering.policy import TieringPolicy

POLICY = TieringPolicy(min_age=0, cold_after="1h")
"""Everything finished may move to warm at once, and to cold an hour after it finished."""

LATER = 7200.0
"""Tiering passes judge age this far ahead, so every finished workflow moves."""


def marker() -> str:
    """A unique marker (upper case, so a step's ``upper`` keeps it as it is)."""
    return f"MK{secrets.token_hex(10).upper()}"


def upper(x: str) -> str:
    return x.upper()


def refuse(x: str) -> str:
    raise ValueError(f"card declined for {x}")


@workflow
async def order(ctx: WorkflowContext, inp: dict[str, Any]) -> dict[str, Any]:
    """One customer order: the marker is in the input, a step result and an attribute.

    With ``"fail": True`` in the input the charge fails (status ``failed``).
    """
    ctx.set_attributes(customer=inp["customer"], ref=inp["marker"])
    step = refuse if inp.get("fail") else upper
    charged = await ctx.step("charge", step, inp["marker"], retry=RetryPolicy(max_attempts=1))
    return {"charged": charged, "customer": inp["customer"]}


@workflow
async def family(ctx: WorkflowContext, inp: dict[str, Any]) -> list[Any]:
    """A parent with two children (ids ``<parent>.c0``, ``<parent>.c1``)."""
    ctx.set_attributes(customer=inp["customer"])
    out = []
    for i in range(2):
        child = {"customer": inp["customer"], "marker": f"{inp['marker']}C{i}"}
        out.append(await ctx.child(order, child, workflow_id=f"{ctx.workflow_id}.c{i}"))
    return out


async def _wait_for_go(ctx: WorkflowContext, inp: dict[str, Any]) -> Any:
    ctx.set_attributes(customer=inp["customer"])
    await ctx.step("begin", upper, inp["marker"])
    return await ctx.wait_for_signal("go")


waiting = workflow(name="waiting")(_wait_for_go)
"""Waits for the signal ``go``: a workflow that has not finished until it is sent."""

approval = workflow(name="approval")(_wait_for_go)
"""The same as ``waiting``, under another type (for a retention policy of its own)."""

WORKFLOWS = [order, family, waiting, approval]


async def main(mode: str, data: str, args: list[str]) -> None:
    tf = Tierflow(data, WORKFLOWS, tiering=POLICY)
    if mode == "open":
        await tf.__aenter__()  # a process start: it resumes an interrupted erasure
    else:
        tf.open()  # no start: only the operation itself may resume it
    try:
        if mode == "erase":
            report = await tf.compliance.erase(
                workflow_id=args[0], reason="data subject request", actor="dpo"
            )
            print(json.dumps(report.to_dict()), flush=True)
        elif mode == "erase-customer":
            report = await tf.compliance.erase(
                attribute={"customer": args[0]}, reason="data subject request", actor="dpo"
            )
            print(json.dumps(report.to_dict()), flush=True)
        elif mode == "retention":
            result = await tf.compliance.apply_retention(now=float(args[0]))
            print(json.dumps(result.to_dict()), flush=True)
        elif mode == "open":
            print(json.dumps(tf.index.count_by_tier()), flush=True)
        elif mode == "tier":
            print(json.dumps((await tf.tier(now=time.time() + LATER)).to_dict()), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        await tf.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
