"""Fixtures for the warm tier: a real S3 server (moto over HTTP, in-process) and stores on both
backends.

Other test packages can reuse them by importing the names into their own conftest::

    from tests.warm.conftest import backend, make_store, s3_bucket, s3_server  # noqa: F401

(``store_url``, ``aws_test_env``, ``s3_enforce_auth`` and ``fs_ops`` likewise, when used.)

``make_store`` and ``store_url`` are parametrized by ``backend`` ("file", "s3"), so a test that
asks for either runs once per backend.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import moto.backends
import pytest
import waitress.channel
import waitress.parser
import waitress.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from tierflow.warm.storage import ObjectStore, StorageSettings

REGION = "us-east-1"
# moto accepts any credentials unless authentication is enforced (see s3_enforce_auth).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


_CLIENTS: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens and the credentials it accepts."""

    endpoint: str  # "http://127.0.0.1:PORT"
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests the server has answered, by HTTP method (for tests that count round trips)."""

    def settings(self, bucket: str, prefix: str = "lake") -> StorageSettings:
        """Storage settings for ``s3://<bucket>/<prefix>`` on this server."""
        return StorageSettings(
            url=f"s3://{bucket}/{prefix}",
            endpoint=self.endpoint,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
        )

    def client(self, service: str = "s3", **kw: Any) -> Any:
        """A boto3 client for this server (tests only: product code never imports boto3).

        Without options the client is made once per service and shared (boto3 clients are
        thread-safe): making one costs ~20 ms of CPU, and fixtures ask for one per bucket.
        """
        if not kw:
            key = (self.endpoint, service)
            if key not in _CLIENTS:
                _CLIENTS[key] = self.client(service, aws_access_key_id=self.access_key)
            return _CLIENTS[key]
        kw.setdefault("aws_access_key_id", self.access_key)
        kw.setdefault("aws_secret_access_key", self.secret_key)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region, **kw)

    def moto_api(self, path: str, body: bytes) -> bytes:
        """POST to moto's control API (``/moto-api/...``)."""
        request = urllib.request.Request(
            self.endpoint + path,
            data=body,
            method="POST",
            # moto reads the raw body; a form content type would make it parse (and lose) it.
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API over HTTP on 127.0.0.1 (moto), shared by the whole session.

    moto's WSGI app is served by waitress rather than by moto's own ``ThreadedMotoServer``
    (werkzeug's development server): the app and its answers are the same, each request costs
    about 40 % less CPU (a thread per request and header parsing through ``email``, gone), and
    S3 requests are about a fifth of the suite's CPU.
    """
    # moto lists its own package directory (~150 isdir calls) on every request to find the
    # service a Host header names; the answer never changes, and computing it once takes a
    # third off the CPU each request costs (the suite sends tens of thousands).
    modules = frozenset(moto.backends.list_of_moto_modules())
    list_modules = moto.backends.list_of_moto_modules
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    moto_app = DomainDispatcherApplication(create_backend_app)
    counted: collections.Counter[str] = collections.Counter()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        counted[environ["REQUEST_METHOD"]] += 1
        return moto_app(environ, start_response)

    server = waitress.server.create_server(
        app,
        host="127.0.0.1",
        port=0,
        threads=8,
        connection_limit=1000,
        # Bodies and answers stay in memory (by default waitress spills those over 0.5-1 MB
        # to temporary files): multipart parts are 5 MB.
        inbuf_overflow=2**30,
        outbuf_overflow=2**30,
        asyncore_use_poll=True,
    )
    waitress_log = logging.getLogger("waitress")
    was_disabled = waitress_log.disabled
    waitress_log.disabled = True  # "task queue depth" warnings while a test floods it
    server.channel_class = _Channel
    thread = threading.Thread(target=server.run, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{server.effective_port}", requests=counted)
    finally:
        _stop_waitress(server)
        thread.join(10)
        waitress_log.disabled = was_disabled
        moto.backends.list_of_moto_modules = list_modules  # type: ignore[assignment]


class _Parser(waitress.parser.HTTPRequestParser):  # type: ignore[misc]
    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # waitress answers "Expect: 100-continue" with "100 Continue" even for an empty body,
        # then waits for body bytes that never come (botocore sends Expect on every upload,
        # empty ones included): an empty body needs no permission to be sent.
        if self.content_length == 0 and not self.chunked:
            self.expect_continue = False


class _Channel(waitress.channel.HTTPChannel):  # type: ignore[misc]
    parser_class = _Parser


def _stop_waitress(server: Any) -> None:
    # waitress stops when its socket map is empty: close the listener, every connection and
    # the trigger, then let the worker threads finish.
    for channel in list(server._map.values()):
        channel.handle_close()
    server.task_dispatcher.shutdown()


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate a test from the machine's AWS and tierflow configuration.

    Test credentials come from the environment, no ~/.aws file is read, and the AWS SDKs never
    try the EC2 metadata address (pyarrow's SDK would otherwise probe it when credentials are
    missing). Everything is undone when the test ends. The store fixtures call this themselves
    (through ``monkeypatch``), so importing them without ``aws_test_env`` works.
    """
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "TIERFLOW_STORAGE_URL",
        "TIERFLOW_S3_ENDPOINT",
        "TIERFLOW_S3_REGION",
        "TIERFLOW_S3_STORAGE_CLASS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    # ObjectStore sets AWS_REQUEST_CHECKSUM_CALCULATION for non-AWS endpoints when it is unset.
    # Setting then deleting records the current state, so the test's change is undone.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "placeholder")
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION")


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of :func:`isolate_aws_env` for one test."""
    isolate_aws_env(monkeypatch)


def create_bucket(server: S3Server) -> str:
    """Create a uniquely named bucket on ``server`` and return its name."""
    name = f"tf-{uuid.uuid4().hex[:16]}"
    server.client().create_bucket(Bucket=name)
    return name


def drop_bucket(server: S3Server, name: str) -> None:
    """Delete a bucket and everything in it (keeps moto's memory flat over a long session)."""
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty bucket on the test S3 server; deleted afterwards."""
    isolate_aws_env(monkeypatch)
    name = create_bucket(s3_server)
    yield name
    drop_bucket(s3_server, name)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: "file" (local directory) or "s3" (moto over HTTP)."""
    return str(request.param)


@pytest.fixture
def make_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ObjectStore]]:
    """Return ``make(**settings_overrides) -> ObjectStore`` on a fresh, empty location.

    "file": ``file://<tmp dir>/store-N`` (not created: ``check()`` creates it).
    "s3": ``s3://<fresh bucket>/some/prefix`` on the test server, explicit credentials.
    """
    isolate_aws_env(monkeypatch)
    counter = itertools.count()
    buckets: list[str] = []
    server: S3Server | None = None
    if backend == "s3":
        server = request.getfixturevalue("s3_server")

    def make(**overrides: Any) -> ObjectStore:
        if server is None:
            url = (tmp_path / f"store-{next(counter)}").as_uri()
            return ObjectStore(StorageSettings(url=url, **overrides))
        bucket = create_bucket(server)
        buckets.append(bucket)
        settings: dict[str, Any] = {
            "url": f"s3://{bucket}/some/prefix",
            "endpoint": server.endpoint,
            "region": server.region,
            "access_key": server.access_key,
            "secret_key": server.secret_key,
        }
        settings.update(overrides)
        return ObjectStore(StorageSettings(**settings))

    yield make
    if server is not None:
        for bucket in buckets:
            drop_bucket(server, bucket)


@pytest.fixture
def store_url(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A storage URL for a fresh location, usable with only the environment.

    For "s3", ``TIERFLOW_S3_ENDPOINT`` points at the test server and ``AWS_*`` hold its
    credentials, so ``ObjectStore.from_url(store_url)`` (or anything reading
    ``TIERFLOW_STORAGE_URL``-style settings) reaches it.
    """
    isolate_aws_env(monkeypatch)
    if backend == "file":
        return (tmp_path / "store").as_uri()
    bucket = request.getfixturevalue("s3_bucket")
    server: S3Server = request.getfixturevalue("s3_server")
    monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", server.endpoint)
    return f"s3://{bucket}/some/prefix"


@dataclass(frozen=True)
class EnforcedAuth:
    """Credentials of an IAM user allowed s3:* while the test server checks signatures."""

    bucket: str
    access_key: str
    secret_key: str


@pytest.fixture
def s3_enforce_auth(s3_server: S3Server, s3_bucket: str) -> Iterator[EnforcedAuth]:
    """Make the (shared) test server authenticate every request for the duration of the test.

    moto accepts any credentials by default. Its ``/moto-api/reset-auth`` control endpoint
    (the server-mode form of ``INITIAL_NO_AUTH_ACTION_COUNT``) makes it check each request's
    SigV4 signature against IAM access keys and the caller's IAM policies. The IAM user is
    created before enforcement starts; enforcement is switched off again before ``s3_bucket``
    is dropped (this fixture depends on it, so it is torn down first).
    """
    iam = s3_server.client("iam")
    user = f"tierflow-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    s3_server.moto_api("/moto-api/reset-auth", b"0")
    try:
        yield EnforcedAuth(s3_bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        s3_server.moto_api("/moto-api/reset-auth", b"inf")


@dataclass
class FsOps:
    """What the process did to the filesystem, in order: ("fsync", path), ("replace", src, dst),
    ("mkdir", path), ("unlink", path), and any ("mark", name) a test adds."""

    events: list[tuple[str, ...]] = field(default_factory=list)

    def index(self, *event: str) -> int:
        """Position of the first event equal to ``event``; fails if there is none."""
        assert event in self.events, (event, self.events)
        return self.events.index(event)

    def fsyncs(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "fsync"]

    def renamed_to(self, dst: str) -> tuple[int, str]:
        """Position of the rename that put ``dst`` in place, and the temporary name it had."""
        for i, e in enumerate(self.events):
            if e[0] == "replace" and e[2] == dst:
                return i, e[1]
        raise AssertionError(f"{dst} was never renamed into place: {self.events}")

    def assert_durable(self, final: Path, before: int | None = None) -> None:
        """``final`` was fsync'd under its temporary name, renamed, then its directory fsync'd,
        and every directory made on the way had its parent fsync'd after it was made; all of
        it before position ``before`` (default: anywhere)."""
        end = len(self.events) if before is None else before
        moved, tmp = self.renamed_to(str(final))
        assert Path(tmp).parent == final.parent
        synced = self.index("fsync", tmp)
        assert synced < moved < end, (synced, moved, end)
        dir_synced = [
            i for i, e in enumerate(self.events) if e == ("fsync", str(final.parent)) and i > moved
        ]
        assert dir_synced and dir_synced[0] < end, (final, self.events)
        for i, e in enumerate(self.events[:end]):
            if e[0] == "mkdir" and Path(e[1]) in final.parents:
                parent = str(Path(e[1]).parent)
                later = [j for j, f in enumerate(self.events) if f == ("fsync", parent) and j > i]
                assert later and later[0] < end, f"new directory {e[1]}: {parent} never synced"


@pytest.fixture
def fs_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsOps]:
    """Record os.fsync (with the path of the descriptor), os.replace, os.mkdir and os.unlink."""
    ops = FsOps()
    real_fsync, real_replace, real_mkdir, real_unlink = os.fsync, os.replace, os.mkdir, os.unlink

    def fsync(fd: int) -> None:
        real_fsync(fd)
        ops.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real_replace(src, dst, **kw)
        ops.events.append(("replace", os.fspath(src), os.fspath(dst)))

    def mkdir(path: Any, *args: Any, **kw: Any) -> None:
        real_mkdir(path, *args, **kw)
        ops.events.append(("mkdir", os.fspath(path)))

    def unlink(path: Any, *args: Any, **kw: Any) -> None:
        real_unlink(path, *args, **kw)
        ops.events.append(("unlink", os.fspath(path)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "unlink", unlink)
    yield ops
