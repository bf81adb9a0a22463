"""`tierflow demo` end to end (small sizes), its DuckDB snippet, `tierflow dev-s3`."""

from __future__ import annotations

import io
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from rich.console import Console
from tierflow import TierflowError
from tierflow.demo import DemoSummary, run_demo

from tests import procs

pytestmark = pytest.mark.timeout(120)


async def _demo(tmp_path: Path, **kw: Any) -> tuple[DemoSummary, str]:
    out = io.StringIO()
    summary = await run_demo(str(tmp_path / "data"), console=Console(file=out, width=250), **kw)
    return summary, out.getvalue()


def _check_output(text: str, summary: DemoSummary) -> None:
    for title in (
        "Where the workflows are",
        "Failures by type",
        "Duration by type",
        "The slowest steps",
        "Audit log",
        "What that snippet prints here",
    ):
        assert title in text
    # Every tier holds some of the run, and the SQL over all of them counts every workflow.
    assert set(summary.tiers) == {"hot", "warm", "cold"}
    assert all(n > 0 for n in summary.tiers.values())
    for wf_type in ("process_order", "refund_payment", "provision_resource", "expense_approval"):
        assert wf_type in text
    assert re.search(r"replay of \S+ from the cold tier: \d+ events, completed", text)
    fork = re.search(r"fork of \S+ \(cold, completed: \{\"status\": \"expired\"\}\)", text)
    assert fork, text
    assert re.search(r'got its payment this time and finished \{"status": "shipped"', text)
    erased = re.search(
        r"erasure of customer c-007: (\d+) workflows before \([a-z ]+\), (\d+) after", text
    )
    assert erased and int(erased.group(1)) > 0 and erased.group(2) == "0", text
    assert re.search(r"│ \d+ +│ \S+ +│ erase +│ dpo@example.com +│ GDPR art. 17 request", text)
    assert "import duckdb" in text and summary.snippet in text


async def test_demo_on_files_shows_every_tier_and_its_snippet_runs_alone(tmp_path: Path) -> None:
    summary, text = await _demo(tmp_path, size=60)
    _check_output(text, summary)
    # Each run has its own subdirectory, so the demo can be run again.
    assert summary.data_dir.parent == (tmp_path / "data").resolve()
    assert summary.data_dir.name.startswith("demo-")
    # The snippet, run as a user would (its own process, no tierflow import), counts what the
    # SQL across tiers counted for warm and cold.
    (tmp_path / "demo_snippet.py").write_text(summary.snippet)
    done = procs.run("demo_snippet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = eval(done.stdout)  # a list of (tier, status, count) tuples
    per_tier: dict[str, int] = {}
    for tier, _status, n in rows:
        per_tier[tier] = per_tier.get(tier, 0) + n
    assert per_tier == {"warm": summary.tiers["warm"], "cold": summary.tiers["cold"]}


def _port_open(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


async def test_demo_on_s3_starts_and_stops_its_server(tmp_path: Path) -> None:
    summary, text = await _demo(tmp_path, size=40, s3=True)
    _check_output(text, summary)
    assert summary.storage_url.startswith("s3://tierflow-demo/tierflow/demo-")
    endpoint = re.search(r"local S3 server\s+\(moto\) on (http://127\.0\.0\.1:\d+)", text)
    assert endpoint, text
    assert not _port_open(endpoint.group(1))  # stopped at the end


async def test_demo_on_s3_without_moto_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)  # as if moto were not installed
    with pytest.raises(TierflowError, match=r"pip install 'moto\[server\]"):
        await _demo(tmp_path, size=40, s3=True)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_dev_s3_prints_its_settings_serves_the_bucket_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    child = procs.popen("tierflow.cli", "dev-s3", "--port", "0", "--bucket", "dev-bucket")
    try:
        env: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while "AWS_REQUEST_CHECKSUM_CALCULATION" not in env:  # the last line it exports
            assert child.poll() is None and time.monotonic() < deadline, child.communicate(5)
            env = dict(re.findall(r"^export (\w+)=(\S+)$", child.output_so_far(), re.M))
            time.sleep(0.05)
        assert env["TIERFLOW_STORAGE_URL"] == "s3://dev-bucket/tierflow"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env["TIERFLOW_S3_ENDPOINT"])
        assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "WHEN_REQUIRED"
        s3 = boto3.client(
            "s3",
            endpoint_url=env["TIERFLOW_S3_ENDPOINT"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        s3.put_object(Bucket="dev-bucket", Key="k", Body=b"v")
        assert s3.get_object(Bucket="dev-bucket", Key="k")["Body"].read() == b"v"
        child.send_signal(2)  # Ctrl-C
        child.communicate(30)
        assert child.returncode == 0
        assert not _port_open(env["TIERFLOW_S3_ENDPOINT"])
    finally:
        if child.poll() is None:
            child.kill()
