"""Retention (issue 19, test 1): policies by type, glob and status, measured from start or from
finish, remove exactly the expired workflows from every tier; a dry run changes nothing and
reports the same counts; ``tf.tier()`` applies retention once a policy exists. On file:// and
moto.

One scenario per tier (cold, warm, hot), each created 20 days after the previous one, with an
injected clock. Per group (base time B):

- ``done``: an order completed at B; policy ``order`` 10 days from finish;
- ``failed``: an order failed at B; policy ``order``/``failed`` 100 days (status wins);
- ``fam``: a parent and two child orders, done at B; policy ``fam*`` 5 days (a glob; the
  children go with their parent whatever their own type's policy says);
- ``wait``: started at B, finished at B+20d; policy ``waiting`` 30 days from *start*;
- ``appr``: the same times, type ``approval``; 30 days from *finish*.

``"*"`` keeps anything else a year. Judged at T0+75d every group's ``done``, ``fam`` and
``wait`` have expired, and the ``appr`` of the cold and warm groups, but not the hot group's
``appr`` (T0+90d from its finish) although its ``wait`` (same times, from start) has; no
``failed`` has.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from tierflow import InvalidArgument, ManualClock, Tierflow
from tierflow.tiering.compliance.retention import RetentionPolicy, parse_keep, pick

from tests.tiering.compliance_app import (
    LATER,
    POLICY,
    WORKFLOWS,
    approval,
    family,
    marker,
    order,
    waiting,
)
from tests.tiering.compliance_support import assert_all_gone, scan
from tests.tiering.test_tiering import readable

pytestmark = pytest.mark.timeout(180)

DAY = 86400.0


# -- the pure parts ---------------------------------------------------------------------


def test_parse_keep():
    assert parse_keep("90d") == (90 * DAY, "90d")
    assert parse_keep("7y") == (7 * 365 * DAY, "7y")
    assert parse_keep("2w")[0] == 14 * DAY
    assert parse_keep(3600)[0] == 3600.0
    assert parse_keep(timedelta(hours=2))[0] == 7200.0
    for bad in ("0d", "-1d", "forever", "", 0, True, float("inf"), timedelta(0)):
        with pytest.raises(InvalidArgument):
            parse_keep(bad)  # type: ignore[arg-type]


def test_the_most_specific_policy_wins():
    def policy(pattern: str, status: str | None = None) -> RetentionPolicy:
        return RetentionPolicy(pattern, timedelta(days=1), status=status)

    policies = [
        policy("*"),
        policy("*", "failed"),
        policy("debug_*"),
        policy("debug_x*"),
        policy("debug_x1"),
        policy("debug_x1", "failed"),
    ]
    assert pick(policies, "orders", "completed") == policy("*")
    assert pick(policies, "orders", "failed") == policy("*", "failed")
    assert pick(policies, "debug_a", "failed") == policy("debug_*")  # type before status
    assert pick(policies, "debug_x2", "completed") == policy("debug_x*")  # longer glob
    assert pick(policies, "debug_x1", "completed") == policy("debug_x1")
    assert pick(policies, "debug_x1", "failed") == policy("debug_x1", "failed")
    assert pick([policy("a*")], "b", "completed") is None


async def test_set_list_remove_validate(tmp_path: Path):
    async with Tierflow(tmp_path / "data", WORKFLOWS) as tf:
        c = tf.compliance
        p = await c.set_retention("orders", "90d", actor="ops", reason="policy 12")
        assert (p.workflow_type, p.keep, p.start_or_finish, p.status) == (
            "orders",
            timedelta(days=90),
            "finish",
            None,
        )
        await c.set_retention("orders", "7y", status="failed", actor="ops")
        await c.set_retention("orders", "120d", actor="ops")  # replaces the first
        got = [(p.workflow_type, p.status, p.keep.days) for p in await c.retention_policies()]
        assert got == [("orders", None, 120), ("orders", "failed", 7 * 365)]
        assert await c.remove_retention("orders", status="failed", actor="ops") is True
        assert await c.remove_retention("orders", status="failed", actor="ops") is False
        for kwargs in (
            {"keep": "1d", "status": "running"},
            {"keep": "1d", "start_or_finish": "end"},
            {"keep": "soon"},
            {"keep": "1d", "actor": ""},
        ):
            with pytest.raises(InvalidArgument):
                await c.set_retention("orders", **{"actor": "ops", **kwargs})
        ops = [r.operation for r in await c.audit_log()]
        assert ops == ["retention.set"] * 3 + ["retention.remove"]


# -- the scenario -----------------------------------------------------------------------


async def _group(tf: Tierflow, clock: ManualClock, g: str) -> dict[str, tuple[str, str]]:
    """One group of the scenario (see the module docstring); clock moves 20 days."""
    out: dict[str, tuple[str, str]] = {}
    for name, fail in (("done", False), ("failed", True)):
        out[name] = (f"{g}-{name}", marker())
        await tf.run(
            order,
            {"customer": f"c-{g}", "marker": out[name][1], "fail": fail},
            workflow_id=out[name][0],
        )
    out["fam"] = (f"{g}-fam", marker())
    await tf.run(family, {"customer": f"c-{g}", "marker": out["fam"][1]}, workflow_id=out["fam"][0])
    await tf.result(out["fam"][0], timeout=10)
    for name, wf in (("wait", waiting), ("appr", approval)):
        out[name] = (f"{g}-{name}", marker())
        await tf.run(wf, {"customer": f"c-{g}", "marker": out[name][1]}, workflow_id=out[name][0])
    clock.advance(20 * DAY)
    for name in ("wait", "appr"):
        await tf.signal(out[name][0], "go", "yes")
        assert await tf.result(out[name][0], timeout=10) == "yes"
    statuses = {n: (await tf.describe(w)).status for n, (w, _) in out.items()}
    assert statuses == {
        "done": "completed",
        "failed": "failed",
        "fam": "completed",
        "wait": "completed",
        "appr": "completed",
    }
    return out


def _members(group: dict[str, tuple[str, str]], names: list[str]) -> set[str]:
    out = {group[n][0] for n in names}
    if "fam" in names:
        out |= {f"{group['fam'][0]}.c0", f"{group['fam'][0]}.c1"}
    return out


async def test_retention_from_start_and_finish_per_status_in_every_tier(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    clock = ManualClock()
    t0 = clock.now()
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY, clock=clock) as tf:
        groups = {}
        for g, to in (("cold", "cold"), ("warm", "warm"), ("hot", None)):
            groups[g] = await _group(tf, clock, g)
            if to is not None:
                await tf.tier(now=clock.now() + LATER, to="warm")
            if to == "cold":
                await tf.tier(now=clock.now() + LATER, to="cold")
        assert tf.index.count_by_tier() == {"cold": 7, "warm": 7, "hot": 7}
        everyone = sorted(tf.index.all_ids())
        before = await readable(tf, everyone)

        c = tf.compliance
        await c.set_retention("order", "10d", actor="ops")
        await c.set_retention("order", "100d", status="failed", actor="ops")
        await c.set_retention("fam*", "5d", actor="ops")
        await c.set_retention("waiting", "30d", start_or_finish="start", actor="ops")
        await c.set_retention("approval", "30d", start_or_finish="finish", actor="ops")
        await c.set_retention("*", "365d", actor="ops")

        now1 = t0 + 75 * DAY
        expired = {
            tier: _members(
                groups[tier], ["done", "fam", "wait"] + ([] if tier == "hot" else ["appr"])
            )
            for tier in groups
        }
        counts = {tier: len(ids) for tier, ids in expired.items()}
        assert counts == {"cold": 5 + 1, "warm": 5 + 1, "hot": 5}

        dry = await c.apply_retention(now=now1, dry_run=True)
        assert (
            dry.dry_run
            and dry.expired == counts
            and dry.held_back == {"hot": 0, "warm": 0, "cold": 0}
        )
        assert sorted(tf.index.all_ids()) == everyone  # the dry run changed nothing
        assert await readable(tf, everyone) == before
        assert await c.audit_log(operation="retention.apply") == []

        report = await c.apply_retention(now=now1)
        assert report.expired == counts
        gone = set().union(*expired.values())
        assert report.erasure is not None and report.erasure.workflows_erased == len(gone)
        kept = sorted(set(everyone) - gone)
        assert sorted(tf.index.all_ids()) == kept
        assert await readable(tf, kept) == {
            "snapshot": {w: before["snapshot"][w] for w in kept},
            "results": {w: before["results"][w] for w in kept},
        }
        markers = {w: m for g in groups.values() for w, m in g.values()}
        await assert_all_gone(tf, {w: markers[w] for w in gone & set(markers)})
        again = await c.apply_retention(now=now1, dry_run=True)
        assert again.expired == {"hot": 0, "warm": 0, "cold": 0}
        records = await c.audit_log(operation="retention.expire")
        assert len(records) == len(gone) and all(r.workflow_id is None for r in records)

        # A tiering pass applies retention itself once policies exist: the hot approval,
        # 30 days from its finish at T0+60d, goes at T0+95d.
        clock.advance(95 * DAY - (clock.now() - t0))
        tiered = await tf.tier(now=clock.now(), to="warm")
        assert tiered.retention is not None
        assert tiered.retention.total == 1  # the pass moved it to warm first
        failed = {groups[g]["failed"][0] for g in groups}
        assert set(tf.index.all_ids()) == failed
        # Judged from start, as "waiting" is, the hot approval would have gone at now1.
        assert groups["hot"]["appr"][0] not in tf.index.all_ids()
    lost = [m for w, m in markers.items() if w not in failed]
    assert scan(data, store, lost) == []
    assert scan(data, store, [groups["warm"]["failed"][1]]) != []


async def test_tier_does_nothing_without_policies(make_store, tmp_path: Path):
    async with Tierflow(
        tmp_path / "data", WORKFLOWS, warm_store=make_store(), tiering=POLICY
    ) as tf:
        await tf.run(order, {"customer": "c", "marker": marker()}, workflow_id="only-one")
        report = await tf.tier(now=time.time() + LATER, to="warm")
        assert report.retention is None
        assert tf.index.count_by_tier() == {"warm": 1}
