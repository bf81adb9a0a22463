"""Settings (issue 10 §2.6): every ``TIERFLOW_*`` variable the README lists takes effect,
bad values are refused with a clear error, and ``max_concurrency`` bounds what runs at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tierflow import (
    EngineOptions,
    InvalidArgument,
    StorageError,
    Tierflow,
    TierflowError,
    WorkflowContext,
    WorkflowFailed,
    workflow,
)

from tests.conftest import wait_for
from tests.hot.test_crash_recovery import spawn
from tests.warm.conftest import S3Server, create_bucket, drop_bucket, isolate_aws_env
from tests.warm.conftest import s3_server as s3_server  # a fixture, used by name

VARIABLES = (
    "TIERFLOW_DATA_DIR",
    "TIERFLOW_DURABILITY",
    "TIERFLOW_MAX_CONCURRENCY",
    "TIERFLOW_MAX_RECOVERY_ATTEMPTS",
    "TIERFLOW_STORAGE_URL",
    "TIERFLOW_S3_ENDPOINT",
    "TIERFLOW_S3_REGION",
    "TIERFLOW_S3_STORAGE_CLASS",
    "TIERFLOW_CATALOG_URL",
    "TIERFLOW_SQL_NATIVE_READS",
    "TIERFLOW_SQL_HOT_CACHE_MB",
    "TIERFLOW_SQL_TEMPLATE",  # tested in tests/tiering/test_sql_template.py
    "TIERFLOW_AUDIT_KEY",
    "TIERFLOW_API_KEYS_FILE",
    "TIERFLOW_API_KEYS",
    "TIERFLOW_HTTP_MAX_BODY_BYTES",
    "TIERFLOW_HTTP_SQL_CONCURRENCY",
    "TIERFLOW_HTTP_HISTORY_CHUNK",  # tested in tests/http/test_history_stream.py
)
# Passed through to the Iceberg catalog as properties (README: TIERFLOW_CATALOG_<NAME>).
PASSTHROUGH = "TIERFLOW_CATALOG_"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TIERFLOW_* setting leaks in from the machine; ./tierflow-data lands in tmp_path."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def add(a: int, b: int) -> int:
    return a + b


@workflow
async def adder(ctx: WorkflowContext, n: int) -> int:
    total = 0
    for i in range(n):
        total = await ctx.step(f"add-{i}", add, total, i)
    return total


def test_readme_lists_exactly_these_variables():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = set(re.findall(r"`(TIERFLOW_[A-Z0-9_]+)`", readme))
    assert f"`{PASSTHROUGH}<NAME>`" in readme
    assert {n for n in named if n in VARIABLES or not n.startswith(PASSTHROUGH)} == set(VARIABLES)


async def test_catalog_url_from_the_environment(tmp_path: Path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    monkeypatch.setenv("TIERFLOW_CATALOG_URL", url)
    monkeypatch.setenv("TIERFLOW_CATALOG_POOL__SIZE", "3")
    async with Tierflow(tmp_path / "d", workflows=[adder]) as tf:
        assert tf.cold.settings.url == url
        assert tf.cold.settings.properties == {"pool.size": "3"}
    async with Tierflow(tmp_path / "d", workflows=[adder], catalog_url="sqlite:////x.db") as tf:
        assert tf.cold.settings.url == "sqlite:////x.db"


async def test_sql_reads_and_cache_from_the_environment(tmp_path: Path, monkeypatch, uid):
    count = "SELECT tier, count(*) FROM history GROUP BY 1 ORDER BY 1"
    wids = [uid() for _ in range(3)]
    async with Tierflow(tmp_path / "d", workflows=[adder]) as tf:
        for wid in wids:
            await tf.run(adder, 2, workflow_id=wid)
        await tf.tier(now=time.time() + 7200, to="warm")  # Parquet files on file://
        await tf.run(adder, 2, workflow_id=uid())  # and one finished hot instance
        expected = (await tf.sql(count)).rows
        # Default: DuckDB reads the cut's local files itself, and finished hot ones are cached.
        # (Queries cannot see DuckDB's settings, so the engine's own flag is what is checked.)
        assert tf.sql_engine.native_reads
        assert tf.sql_engine.hot_cache.nbytes > 0
    monkeypatch.setenv("TIERFLOW_SQL_NATIVE_READS", "0")
    monkeypatch.setenv("TIERFLOW_SQL_HOT_CACHE_MB", "0")
    async with Tierflow(tmp_path / "d", workflows=[adder]) as tf:
        assert (await tf.sql(count)).rows == expected
        assert not tf.sql_engine.native_reads  # no file allowed: Arrow reads them
        assert tf.sql_engine.hot_cache.nbytes == 0
    for name, bad in (("TIERFLOW_SQL_NATIVE_READS", "maybe"), ("TIERFLOW_SQL_HOT_CACHE_MB", "-1")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(InvalidArgument, match=name):
            Tierflow(tmp_path / "d", workflows=[adder])
        monkeypatch.delenv(name)


# -- TIERFLOW_DATA_DIR ------------------------------------------------------------------------


async def test_data_dir_from_the_environment(tmp_path: Path, monkeypatch, uid):
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(env_dir))
    wid = uid()
    async with Tierflow(workflows=[adder]) as tf:
        assert tf.data_dir == env_dir
        assert await (await tf.run(adder, 3, workflow_id=wid)).result() == 3
        assert tf.engine.instance_path(wid).is_relative_to(env_dir / "hot")
    assert not (tmp_path / "tierflow-data").exists()
    # Another engine configured by the same variable finds the instance.
    async with Tierflow(workflows=[adder]) as tf:
        assert (await tf.describe(wid)).result == 3
    # An explicit argument wins over the environment.
    async with Tierflow(tmp_path / "explicit", workflows=[adder]) as tf:
        assert tf.data_dir == tmp_path / "explicit"
        assert (await tf.list()).items == []


async def test_unusable_data_dir_from_the_environment_is_a_clear_error(tmp_path: Path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(blocker / "data"))
    tf = Tierflow(workflows=[adder])
    with pytest.raises(StorageError, match="a-file"):
        tf.open()


# -- TIERFLOW_DURABILITY ----------------------------------------------------------------------


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files fdatasync'd through Python (instance WALs under durability=full)."""
    calls: list[str] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


@pytest.mark.parametrize(("value", "synced"), [("full", True), ("normal", False), (None, True)])
async def test_durability_from_the_environment(
    tmp_path: Path, monkeypatch, uid, fdatasyncs: list[str], value: str | None, synced: bool
):
    if value is not None:
        monkeypatch.setenv("TIERFLOW_DURABILITY", value)
    async with Tierflow(tmp_path / "d", [adder]) as tf:
        assert tf.engine.durability == (value or "full")
        wid = uid()
        assert await (await tf.run(adder, 4, workflow_id=wid)).result() == 6
        wal = f"{tf.engine.instance_path(wid)}-wal"
    # full: each step's result is fdatasync'd before the next step runs; normal: never.
    assert (fdatasyncs.count(wal) >= 4) is synced
    if not synced:
        assert fdatasyncs == []


async def test_durability_argument_wins_over_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TIERFLOW_DURABILITY", "normal")
    assert Tierflow(tmp_path / "d", [adder], options=EngineOptions()).engine.durability == "full"


def test_bad_durability_in_the_environment_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TIERFLOW_DURABILITY", "fast")
    with pytest.raises(InvalidArgument, match="'fast'") as err:
        Tierflow(tmp_path / "d", [adder])
    assert isinstance(err.value, ValueError) and "durability" in str(err.value)


# -- TIERFLOW_MAX_CONCURRENCY (and max_concurrency itself) -------------------------------------

_load: dict[str, dict[str, Any]] = {}


async def hold(key: str, name: str) -> str:
    """Count how many instances are inside this step at once; leave when let go."""
    s = _load[key]
    s["now"] += 1
    s["peak"] = max(s["peak"], s["now"])
    s["entered"].append(name)
    try:
        await s["gates"][name].wait()
    finally:
        s["now"] -= 1
    return name


@workflow
async def held(ctx: WorkflowContext, arg: list[str]) -> str:
    return str(await ctx.step("hold", hold, arg[0], arg[1]))


async def run_held(tf: Tierflow, key: str, n: int, uid) -> int:
    """Start ``n`` held instances; let one go at a time; return the peak inside the step."""
    names = [f"n{i}" for i in range(n)]
    s = _load[key] = {
        "now": 0,
        "peak": 0,
        "entered": [],
        "gates": {name: asyncio.Event() for name in names},
    }
    handles = [await tf.start(held, [key, name], workflow_id=uid()) for name in names]
    limit = tf.engine.max_concurrency
    for released in range(n):
        # As many as the limit allows are in; let the oldest one go.
        want = min(n, released + limit)

        async def filled(want: int = want) -> bool:
            return len(s["entered"]) >= want

        await wait_for(filled)
        s["gates"][s["entered"][released]].set()
    assert sorted([await h.result(timeout=10) for h in handles]) == sorted(names)
    return int(s["peak"])


@pytest.mark.parametrize("source", ["argument", "environment"])
async def test_max_concurrency_bounds_instances_running_at_once(make_tf, uid, monkeypatch, source):
    if source == "environment":
        monkeypatch.setenv("TIERFLOW_MAX_CONCURRENCY", "3")
        tf = await make_tf([held])
    else:
        monkeypatch.setenv("TIERFLOW_MAX_CONCURRENCY", "1")  # the argument wins
        tf = await make_tf([held], options=EngineOptions(max_concurrency=3))
    assert tf.engine.max_concurrency == 3
    assert await run_held(tf, uid("k"), 8, uid) == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [("three", "TIERFLOW_MAX_CONCURRENCY must be an integer"), ("0", "max_concurrency")],
)
def test_bad_max_concurrency_in_the_environment_is_refused(tmp_path, monkeypatch, value, message):
    monkeypatch.setenv("TIERFLOW_MAX_CONCURRENCY", value)
    with pytest.raises(InvalidArgument, match=message):
        Tierflow(tmp_path / "d", [adder])


# -- TIERFLOW_MAX_RECOVERY_ATTEMPTS -----------------------------------------------------------


@workflow(name="doomed")
async def doomed_no_more(ctx: WorkflowContext) -> str:
    """crash_app's ``doomed`` with a step that no longer kills its process."""
    await ctx.step("suicide", add, 1, 1)
    return "recovered"


@pytest.mark.timeout(120)
async def test_max_recovery_attempts_from_the_environment(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    proc = spawn("doomed", data)  # its step SIGKILLs the process on the first run
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    shutil.copytree(data, tmp_path / "copy")

    # One recovery allowed: the orphan is recovered and runs to completion.
    monkeypatch.setenv("TIERFLOW_MAX_RECOVERY_ATTEMPTS", "1")
    async with Tierflow(tmp_path / "copy", [doomed_no_more]) as tf:
        assert await tf.result("doomed-1", timeout=30) == "recovered"

    # None allowed: the orphan is failed, naming the setting, without running.
    monkeypatch.setenv("TIERFLOW_MAX_RECOVERY_ATTEMPTS", "0")
    async with Tierflow(data, [doomed_no_more]) as tf:
        with pytest.raises(WorkflowFailed, match="max_recovery_attempts=0"):
            await tf.result("doomed-1", timeout=30)


def test_non_integer_max_recovery_attempts_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERFLOW_MAX_RECOVERY_ATTEMPTS", "many")
    with pytest.raises(InvalidArgument, match="TIERFLOW_MAX_RECOVERY_ATTEMPTS must be an integer"):
        Tierflow(tmp_path / "d", [adder])


def test_negative_max_recovery_attempts_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERFLOW_MAX_RECOVERY_ATTEMPTS", "-1")
    with pytest.raises(InvalidArgument, match="max_recovery_attempts"):
        Tierflow(tmp_path / "d", [adder])


# -- TIERFLOW_STORAGE_URL, TIERFLOW_S3_* ------------------------------------------------------

LATER = 7200.0  # tier as if two hours had passed: every finished instance is old enough


async def finished_instance(tf: Tierflow, uid) -> str:
    wid = uid()
    assert await (await tf.run(adder, 3, workflow_id=wid)).result() == 3
    return wid


async def test_storage_url_file_from_the_environment(tmp_path: Path, monkeypatch, uid):
    lake = tmp_path / "lake-from-env"
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", lake.as_uri())
    async with Tierflow(tmp_path / "d", [adder]) as tf:
        wid = await finished_instance(tf, uid)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == 1
        assert (await tf.describe(wid)).tier == "warm"
        assert [e.step_name for e in await tf.history(wid)][-2] == "add-2"
    assert len(list((lake / "warm" / "manifests").glob("batch-*.json"))) == 1
    assert not (tmp_path / "d" / "lake").exists()


@pytest.fixture
def env_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket that ``TIERFLOW_STORAGE_URL`` and ``TIERFLOW_S3_ENDPOINT`` point at."""
    isolate_aws_env(monkeypatch)  # test credentials only; restores the environment after
    bucket = create_bucket(s3_server)
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", f"s3://{bucket}/from-env")
    monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", s3_server.endpoint)
    yield bucket
    drop_bucket(s3_server, bucket)


async def tier_one(tmp_path: Path, uid) -> None:
    """Tier one finished instance with settings from the environment only."""
    async with Tierflow(tmp_path / "d", [adder]) as tf:
        wid = await finished_instance(tf, uid)
        before = [e.to_dict() for e in await tf.history(wid)]
        assert (await tf.tier(now=time.time() + LATER)).workflows_moved == 1
        assert (await tf.describe(wid)).tier == "warm"
        assert [e.to_dict() for e in await tf.history(wid)] == before


def warm_keys(server: S3Server, bucket: str) -> list[str]:
    objects = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    keys = [o["Key"] for o in objects]
    assert all(k.startswith("from-env/") for k in keys), keys
    return [k for k in keys if k.startswith("from-env/warm/") and not k.endswith("/")]


@pytest.mark.timeout(120)
async def test_s3_url_and_endpoint_from_the_environment_reach_the_server(
    tmp_path: Path, uid, s3_server: S3Server, env_bucket: str
):
    await tier_one(tmp_path, uid)
    keys = warm_keys(s3_server, env_bucket)
    assert any(k.startswith("from-env/warm/manifests/batch-") for k in keys)
    assert any(k.startswith("from-env/warm/history/") for k in keys)
    assert any(k.startswith("from-env/warm/workflows/") for k in keys)


@pytest.mark.timeout(120)
async def test_s3_storage_class_from_the_environment_applies_to_tiered_objects(
    tmp_path: Path, uid, monkeypatch, s3_server: S3Server, env_bucket: str
):
    monkeypatch.setenv("TIERFLOW_S3_STORAGE_CLASS", "STANDARD_IA")
    await tier_one(tmp_path, uid)
    client = s3_server.client()
    classes = {
        k: client.head_object(Bucket=env_bucket, Key=k).get("StorageClass")
        for k in warm_keys(s3_server, env_bucket)
    }
    assert len(classes) == 3  # two Parquet files and the manifest
    assert set(classes.values()) == {"STANDARD_IA"}, classes


class _Recorder(BaseHTTPRequestHandler):
    """An S3 endpoint that refuses everything and remembers who asked."""

    seen: list[str]

    def _deny(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        body = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """``(endpoint, authorization headers received)`` of a refusing S3 endpoint."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.timeout(120)
async def test_s3_region_from_the_environment_signs_the_requests(
    tmp_path: Path, monkeypatch, uid, recorder
):
    endpoint, seen = recorder
    isolate_aws_env(monkeypatch)
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", "s3://some-bucket/p")
    monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("TIERFLOW_S3_REGION", "ap-southeast-2")
    async with Tierflow(tmp_path / "d", [adder]) as tf:
        wid = await finished_instance(tf, uid)
        with pytest.raises(StorageError, match="access denied"):
            await tf.tier(now=time.time() + LATER)
        assert (await tf.describe(wid)).tier == "hot"  # nothing moved
    assert seen, "the endpoint from TIERFLOW_S3_ENDPOINT was never called"
    # SigV4: Credential=<key>/<date>/<region>/s3/aws4_request
    assert all("/ap-southeast-2/s3/aws4_request" in a for a in seen), seen


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TIERFLOW_STORAGE_URL", "ftp://host/lake", "ftp"),
        ("TIERFLOW_S3_ENDPOINT", "127.0.0.1:9000", "127.0.0.1:9000"),
        ("TIERFLOW_S3_STORAGE_CLASS", "GLACIER", "GLACIER"),
        ("TIERFLOW_S3_STORAGE_CLASS", "standard-ia", "standard-ia"),
    ],
)
async def test_bad_storage_settings_in_the_environment_are_refused_before_tiering(
    tmp_path: Path, monkeypatch, uid, name: str, value: str, message: str
):
    isolate_aws_env(monkeypatch)
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", "s3://some-bucket/p")
    monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", "http://127.0.0.1:9")  # never AWS itself
    monkeypatch.setenv(name, value)
    async with Tierflow(tmp_path / "d", [adder]) as tf:
        wid = await finished_instance(tf, uid)
        with pytest.raises(InvalidArgument, match=message) as err:
            await tf.tier(now=time.time() + LATER)
        assert isinstance(err.value, TierflowError)
        assert (await tf.describe(wid)).tier == "hot"
