"""``tierflow compliance ...`` (issue 19's CLI), in-process on file:// and moto S3.

The commands reach the data through ``TIERFLOW_STORAGE_URL`` (and the test server's
endpoint and keys in the environment), as an operator's shell would.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tierflow import ManualClock, Tierflow
from tierflow.cli import app
from tierflow.tiering.policy import TieringPolicy
from typer.testing import CliRunner

from tests.cli_runner import Cli
from tests.tiering.test_compliance_export import FLOWS, HOUR, START, an_order, order

pytestmark = pytest.mark.timeout(120)


def archive(data: Path, ids: dict[str, str]) -> None:
    """Run one order per id; tier those named "cold" to cold (others stay hot)."""

    async def go() -> None:
        clock = ManualClock(START)
        policy = TieringPolicy(min_age=0, cold_after="1h")
        async with Tierflow(data, FLOWS, tiering=policy, clock=clock) as tf:
            for n, (kind, wid) in enumerate(sorted(ids.items())):
                if kind.startswith("cold"):
                    await tf.run(order, an_order(n), workflow_id=wid)
            await tf.tier(now=clock.now() + 2 * HOUR)
            for n, (kind, wid) in enumerate(sorted(ids.items())):
                if not kind.startswith("cold"):
                    await tf.run(order, an_order(n), workflow_id=wid)

    asyncio.run(go())


@pytest.fixture
def cli(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", store_url)
    return Cli(tmp_path / "d")


def test_export_then_verify_and_every_tampering_exits_1_naming_the_file(
    cli: Cli, tmp_path: Path, uid
):
    wid = uid("cold")
    archive(cli.data, {"cold": wid})
    out = tmp_path / "export"
    manifest = cli.json("compliance", "export", wid, "--out", str(out), "--reason", "DSAR 17")
    assert manifest["workflow_id"] == wid and manifest["tier"] == "cold"
    assert manifest["cold_snapshot_id"] is not None and manifest["events"] > 2
    assert sorted(p.name for p in out.iterdir()) == [
        "events.jsonl",
        "manifest.json",
        "workflow.json",
    ]

    text, _ = cli("compliance", "verify", str(out))
    assert "verified" in text and wid in text
    assert cli.json("compliance", "verify", str(out))["verified"] is True
    # Only the files: no data directory needed (an auditor's copy).
    runner = CliRunner()
    alone = runner.invoke(app, ["compliance", "verify", str(out), "--files-only", "--json"])
    assert alone.exit_code == 0 and json.loads(alone.stdout)["verified"] is True

    (out / "extra.txt").write_text("x")
    verdict = cli.json("compliance", "verify", str(out), code=1)
    assert verdict["verified"] is False and verdict["files"] == ["extra.txt"]
    _, err = cli("compliance", "verify", str(out), code=1)
    assert "does not verify" in err and "extra.txt" in err
    (out / "extra.txt").unlink()
    (out / "events.jsonl").write_bytes(
        (out / "events.jsonl").read_bytes().replace(b"marker", b"markex")
    )
    assert cli.json("compliance", "verify", str(out), code=1)["files"] == ["events.jsonl"]

    # The export is in the audit log, with the actor (the OS user by default) and the reason.
    (record,) = cli.json("compliance", "audit", "--id", wid, "--operation", "export")
    assert record["actor"] == getpass.getuser() and record["reason"] == "DSAR 17"
    assert record["detail"]["tier"] == "cold"


def test_export_refusals_exit_2_bad_input_or_3_not_found_with_the_reason(
    cli: Cli, tmp_path: Path, uid
):
    wid = uid("hot")
    archive(cli.data, {"hot": wid})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine").write_text("keep")
    _, err = cli("compliance", "export", wid, "--out", str(busy), code=2)
    assert "not empty" in err
    _, err = cli("compliance", "export", uid("nobody"), "--out", str(tmp_path / "x"), code=3)
    assert "no workflow" in err
    _, err = cli("compliance", "verify", str(tmp_path / "nowhere"), code=1)
    assert "does not exist" in err


# The commands only pass arguments to tf.compliance, whose own tests run on both backends;
# each CLI run opens the data directory afresh (~0.4 s), so this one runs on file:// only.
@pytest.mark.parametrize("backend", ["file"])
def test_retention_hold_erase_and_audit_commands(cli: Cli, uid):
    ids = {"cold": uid("cold"), "hot": uid("hot")}
    archive(cli.data, ids)
    policy = cli.json(
        "compliance",
        "retention",
        "set",
        "export_*",
        "30d",
        "--reason",
        "policy 4.2",
        "--actor",
        "dpo",
    )
    assert policy["workflow_type"] == "export_*"
    listed = cli.json("compliance", "retention", "list")
    assert [p["workflow_type"] for p in listed] == ["export_*"]
    assert cli.json("compliance", "retention", "remove", "nope", code=1)["removed"] is False
    _, err = cli("compliance", "retention", "remove", "nope", code=1)
    assert "no retention policy" in err
    dry = cli.json("compliance", "apply", "--dry-run")
    assert dry["dry_run"] is True

    hold = cli.json("compliance", "hold", "--id", ids["cold"], "--reason", "litigation 9")
    assert [h["hold_id"] for h in cli.json("compliance", "holds", "--id", ids["cold"])] == [
        hold["hold_id"]
    ]
    _, err = cli("compliance", "erase", ids["cold"], "--reason", "DSAR", code=4)  # held
    assert hold["hold_id"] in err
    cli.json("compliance", "release", hold["hold_id"], "--reason", "settled")
    assert cli.json("compliance", "holds") == []
    # By attribute (the hot one's customer is c-1): it covers that workflow only.
    by_customer = cli.json("compliance", "hold", "--attribute", "customer=c-1", "--reason", "c-1")
    assert by_customer["attribute"] == {"customer": "c-1"}
    assert [h["hold_id"] for h in cli.json("compliance", "holds", "--id", ids["hot"])] == [
        by_customer["hold_id"]
    ]
    assert cli.json("compliance", "holds", "--id", ids["cold"]) == []
    _, err = cli("compliance", "erase", "--attribute", "customer=c-1", "--reason", "x", code=4)
    assert by_customer["hold_id"] in err
    # A number is a number (its amount is 11), and a JSON string is text.
    by_amount = cli.json("compliance", "hold", "--attribute", "amount=11", "--reason", "n")
    assert by_amount["attribute"] == {"amount": 11}
    held = {h["hold_id"] for h in cli.json("compliance", "holds", "--id", ids["hot"])}
    assert held == {by_customer["hold_id"], by_amount["hold_id"]}
    as_text = cli.json("compliance", "hold", "--attribute", 'amount="11"', "--reason", "t")
    assert as_text["attribute"] == {"amount": "11"}
    assert as_text["hold_id"] not in {
        h["hold_id"] for h in cli.json("compliance", "holds", "--id", ids["hot"])
    }
    for h in (by_amount, as_text):
        cli.json("compliance", "release", h["hold_id"], "--reason", "done")
    _, err = cli("compliance", "hold", "--attribute", "customer", "--reason", "x", code=2)
    assert "NAME=VALUE" in err
    cli.json("compliance", "release", by_customer["hold_id"], "--reason", "done")
    report = cli.json("compliance", "erase", ids["cold"], "--reason", "DSAR 18", "--actor", "dpo")
    assert report
    _, err = cli("compliance", "erase", "--reason", "x", code=2)  # neither ID nor --attribute
    erased = cli.json("compliance", "audit", "--id", ids["cold"], "--operation", "erase")
    assert erased and all(r["workflow_id"] is None for r in erased)
    assert erased[-1]["actor"] == "dpo" and erased[-1]["reason"] == "DSAR 18"
    text, _ = cli("compliance", "audit")
    assert "erase" in text and "retention" in text and "hold" in text
    cli.json("compliance", "retention", "remove", "export_*")


def readme_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Compliance", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_compliance_example_runs_as_written(tmp_path: Path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "TIERFLOW_AUDIT_KEY": "k" * 32}
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("refused:") and "hold-" in line for line in lines), lines
    assert any(line.startswith("hot [('workflow.json'") for line in lines), lines
    erased = [line for line in lines if line.startswith("erase dpo GDPR art. 17")]
    assert len(erased) == 1, lines  # refund-1's record, found by its keyed hash
    assert "refund-1" not in (
        tmp_path / "compliance-data" / "hot" / "index.sqlite"
    ).read_bytes().decode("latin-1")
