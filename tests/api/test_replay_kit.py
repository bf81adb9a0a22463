"""The replay kit, as an application's own test suite would use it (Temporal's Replayer).

1. Keep a history next to the tests: ``tierflow history ID --json > tests/histories/x.json``
   (``histories/checkout.json`` here was written that way).
2. Replay it against today's code in a test: ``replay_history(path, workflow)`` returns the
   result, or raises ``NonDeterminismError`` naming the event where code and history part.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tierflow import NonDeterminismError, Tierflow, WorkflowContext, workflow
from tierflow.testing import load_history, replay_history

from tests import procs
from tests.api import kit_app
from tests.api.kit_app import charge, checkout, price

ROOT = Path(__file__).resolve().parents[2]
STORED = Path(__file__).parent / "histories" / "checkout.json"
ORDER = {"id": "o-1", "items": [{"qty": 2, "unit": 9.5}, {"qty": 1, "unit": 3.25}]}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return procs.run("tierflow.cli", *args, cwd=ROOT)


# -- the example: what a user's test looks like ------------------------------------------


def test_stored_history_replays_against_todays_code():
    result = replay_history(STORED, checkout)
    assert result.result == {
        "order": "o-1",
        "total": 22.25,
        "receipt": "receipt-22.25",
        "at": result.result["at"],
    }


@workflow(name="checkout")
async def checkout_v2(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """A "refactor" that charges before the timer and renames a step: not replay-safe."""
    at = ctx.now()
    total = await ctx.step("compute_price", price, order["items"])
    receipt = await ctx.step("charge", charge, total)
    return {"order": order["id"], "total": total, "receipt": receipt, "at": at.isoformat()}


def test_stored_history_catches_a_non_deterministic_change():
    with pytest.raises(NonDeterminismError) as err:
        replay_history(STORED, checkout_v2)
    events = load_history(STORED)
    price_started = next(e.event_id for e in events if e.step_name == "price")
    assert err.value.event_id == price_started
    assert (err.value.expected, err.value.got) == ("step 'price'", "asked for step 'compute_price'")


# -- the round trip behind it: run, export with the CLI, replay ------------------------------


def test_export_with_the_cli_then_replay(tmp_path: Path):
    data = tmp_path / "d"

    async def run() -> Any:
        async with Tierflow(data, [checkout]) as tf:
            return await (await tf.run(checkout, ORDER, workflow_id="order-42")).result(10)

    expected = asyncio.run(run())
    out = cli("history", "order-42", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    assert exported["tier"] == "hot" and exported["events"][0]["event_id"] == 1
    path = tmp_path / "order-42.json"
    path.write_text(out.stdout)
    assert replay_history(path, checkout).result == expected
    assert replay_history(exported["events"], checkout).result == expected
    with pytest.raises(NonDeterminismError):
        replay_history(path, checkout_v2)


def test_cli_replay_and_fork(tmp_path: Path):
    data = tmp_path / "d"

    async def run() -> list[Any]:
        async with Tierflow(data, [checkout]) as tf:
            await (await tf.run(checkout, ORDER, workflow_id="order-7")).result(10)
            return await tf.history("order-7")

    events = asyncio.run(run())
    app = kit_app.__name__
    out = cli("replay", "order-7", "--app", app, "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["deterministic"] and report["status"] == "completed"
    assert report["tier"] == "hot" and report["events"] == len(events)

    cut = next(e.event_id for e in events if e.step_name == "charge") - 1
    args = ("--app", app, "--data-dir", str(data), "--id", "order-7-f")
    out = cli("fork", "order-7", "--at-event", str(cut), *args)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"workflow_id": "order-7-f", "status": "completed"}

    inside = cut + 1  # charge's step.started
    out = cli("fork", "order-7", "--at-event", str(inside), "--app", app, "--data-dir", str(data))
    assert out.returncode == 2 and "inside step 'charge'" in out.stderr
