"""ObjectStore on both backends (local directory and a real S3 API over HTTP)."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tierflow.hot.errors import InvalidArgument, StorageError, TierflowError
from tierflow.warm.storage import ObjectNotFound, ObjectStore, StorageSettings

from tests.warm.conftest import EnforcedAuth, S3Server

MakeStore = Callable[..., ObjectStore]

BINARY = bytes(range(256)) * 37 + b"\x00\r\n\xff"


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ round trips


def test_put_get_exists_size_list_delete_round_trip(make_store: MakeStore) -> None:
    store = make_store()
    keys = {
        "warm/history/batch-1.parquet": BINARY,
        "warm/history/2026/11/batch-2.parquet": b"x" * 5000,
        "warm/manifests/batch-1.json": b'{"files": 1}',
        "top.bin": b"",
        "names/with space and ünïcode+%.bin": b"odd names",
    }
    for key, data in keys.items():
        store.put(key, data)

    for key, data in keys.items():
        assert store.get(key) == data
        assert store.exists(key)
        assert store.size(key) == len(data)
    assert not store.exists("warm/history/missing.parquet")
    assert not store.exists("warm/history")  # a "directory" is not an object

    assert store.list("warm/history") == [
        ("warm/history/2026/11/batch-2.parquet", 5000),
        ("warm/history/batch-1.parquet", len(BINARY)),
    ]
    assert store.list("warm/history/") == store.list("warm/history")
    assert store.list("") == sorted((k, len(v)) for k, v in keys.items())
    assert store.list("no/such/prefix") == []

    store.delete("top.bin")
    store.delete("top.bin")  # missing is fine
    assert not store.exists("top.bin")
    store.delete_many(
        ["warm/history/batch-1.parquet", "warm/history/2026/11/batch-2.parquet", "never/was"]
    )
    assert store.list("warm/history") == []
    assert [k for k, _ in store.list("")] == [
        "names/with space and ünïcode+%.bin",
        "warm/manifests/batch-1.json",
    ]


def test_put_replaces_an_existing_object(make_store: MakeStore) -> None:
    store = make_store()
    store.put("a/b", b"first version, longer")
    store.put("a/b", b"second")
    assert store.get("a/b") == b"second"
    assert store.list("a") == [("a/b", 6)]


def test_list_matches_whole_path_components(make_store: MakeStore) -> None:
    store = make_store()
    store.put("a/x", b"1")
    store.put("ab/y", b"22")
    assert store.list("a") == [("a/x", 1)]
    assert store.list("ab") == [("ab/y", 2)]


def test_list_modified_gives_the_listing_with_its_times(make_store: MakeStore) -> None:
    from datetime import UTC, datetime, timedelta

    store = make_store()
    start = datetime.now(UTC) - timedelta(seconds=5)
    store.put("a/x", b"1")
    store.put("a/y/z", b"22")
    listed = store.list_modified("a")
    assert [(k, n) for k, n, _ in listed] == store.list("a") == [("a/x", 1), ("a/y/z", 2)]
    for _, _, modified in listed:
        assert modified is not None and start <= modified <= datetime.now(UTC) + timedelta(5)
    assert store.list_modified("no/such/prefix") == []


def test_delete_many_deletes_a_large_batch(make_store: MakeStore) -> None:
    store = make_store()
    keys = [f"batch/{i:03d}.bin" for i in range(60)]
    for key in keys:
        store.put(key, key.encode())
    store.put("keep/me", b"k")
    store.delete_many(keys + keys[:5])  # duplicates are harmless
    assert store.list("") == [("keep/me", 1)]


def test_missing_object_raises_object_not_found(make_store: MakeStore) -> None:
    store = make_store()
    for call in (store.get, store.size, store.open_input):
        with pytest.raises(ObjectNotFound) as info:
            call("warm/nope.parquet")
        assert isinstance(info.value, StorageError)
        assert "warm/nope.parquet" in str(info.value)
        assert store.url in str(info.value)
        assert info.value.url == store.url


# ------------------------------------------------------------------------------ parquet


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "workflow_id": [f"wf-{i % 97}" for i in range(n)],
            "event_id": pa.array(range(n), pa.int64()),
            "payload": [f'{{"i": {i}}}' for i in range(n)],
        }
    )


def test_parquet_written_with_open_output_reads_back(make_store: MakeStore) -> None:
    store = make_store()
    table = _table(50_000)
    key = "warm/history/batch-000001.parquet"
    with store.open_output(key) as sink:
        assert isinstance(sink, pa.NativeFile)
        with pq.ParquetWriter(sink, table.schema) as writer:
            writer.write_table(table, row_group_size=20_000)
        # Nothing is visible until the stream is closed: readers never see half a file.
        assert not store.exists(key)
    assert store.exists(key)
    assert store.size(key) > 0

    with store.open_input(key) as src:
        parquet = pq.ParquetFile(src)
        assert parquet.metadata.num_row_groups == 3
        assert parquet.read_row_group(1).num_rows == 20_000
        assert parquet.read().equals(table)
    # The fs/path pair works for pyarrow readers that take a filesystem (datasets, DuckDB).
    assert pq.read_table(store.path(key), filesystem=store.fs).equals(table)
    assert store.path(key) == f"{store.root}/{key}"


def test_open_input_is_random_access(make_store: MakeStore) -> None:
    store = make_store()
    store.put("blob", BINARY)
    with store.open_input("blob") as src:
        assert src.size() == len(BINARY)
        src.seek(256)
        assert src.read(3) == bytes([0, 1, 2])
        src.seek(-4, 2)
        assert src.read() == b"\x00\r\n\xff"


def test_open_output_creates_parent_directories(make_store: MakeStore) -> None:
    store = make_store()
    with store.open_output("deep/er/and/deeper/f.bin") as sink:
        sink.write(b"abc")
    assert store.get("deep/er/and/deeper/f.bin") == b"abc"


# ------------------------------------------------------------------------------ keys


BAD_KEYS = ["../escape", "a/../../escape", "/etc/passwd", "", "a//b", "./a", "a/.", "a/..", "x\0y"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_escaping_the_root_are_rejected(make_store: MakeStore, key: str) -> None:
    store = make_store()
    calls: list[Callable[[], Any]] = [
        lambda: store.path(key),
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
        lambda: store.delete_many(["fine", key]),
        lambda: store.open_output(key),
        lambda: store.open_input(key),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument):
            call()
    with pytest.raises(ValueError):  # InvalidArgument is also a ValueError
        store.path(key)


def test_file_store_writes_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = ObjectStore.from_url(root.as_uri())
    for key in ("../outside", "../../outside", "sub/../../outside"):
        with pytest.raises(InvalidArgument):
            store.put(key, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    store.put("inside", b"x")
    assert (root / "inside").read_bytes() == b"x"
    assert store.path("a/b.parquet") == f"{root}/a/b.parquet"
    assert store.root == str(root)


def test_file_store_rejects_relative_or_odd_urls(tmp_path: Path) -> None:
    for url in ("file://relative/path", "file:relative", "ftp://x/y", "/abs/path", "tierflow"):
        with pytest.raises(InvalidArgument):
            ObjectStore.from_url(url)
    uri = (tmp_path / "a b").as_uri()
    assert ObjectStore.from_url(uri + "/").url == uri


# ------------------------------------------------------------------------------ check()


def test_check_passes_on_a_good_store_and_leaves_nothing_visible(make_store: MakeStore) -> None:
    store = make_store()
    store.check()
    store.check()  # repeatable
    assert store.list("") == []
    store.put("after/check", b"ok")
    assert store.list("") == [("after/check", 2)]


def test_check_creates_a_missing_local_root(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    store = ObjectStore.from_url(root.as_uri())
    store.check()
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_check_fails_when_the_local_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a dir")
    store = ObjectStore.from_url((tmp_path / "file").as_uri())
    with pytest.raises(StorageError, match="is not a directory") as info:
        store.check()
    assert store.url in str(info.value)
    with pytest.raises(StorageError):
        store.put("x", b"1")


@pytest.mark.timeout(30)
def test_check_names_a_missing_bucket_quickly(s3_server: S3Server, aws_test_env: None) -> None:
    store = ObjectStore.from_url("s3://no-such-bucket-tierflow/p", endpoint=s3_server.endpoint)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        store.check()
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "bucket 'no-such-bucket-tierflow' does not exist" in message
    assert "s3://no-such-bucket-tierflow/p" in message
    assert info.value.url == "s3://no-such-bucket-tierflow/p"
    # A write to it names the bucket too.
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-tierflow' does not exist"):
        store.put("k", b"v")


@pytest.mark.timeout(30)
def test_check_fails_fast_on_an_unreachable_endpoint(aws_test_env: None) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = ObjectStore.from_url("s3://bucket/prefix", endpoint=endpoint)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        store.check()
    assert time.monotonic() - started < 3
    assert f"cannot reach endpoint {endpoint}" in str(info.value)
    assert "s3://bucket/prefix" in str(info.value)


@pytest.mark.timeout(60)
def test_operations_on_an_unreachable_endpoint_raise_storage_error(aws_test_env: None) -> None:
    store = ObjectStore.from_url("s3://bucket/prefix", endpoint=f"http://127.0.0.1:{closed_port()}")
    # Normal operations retry (transient errors happen), so each takes a second or two here.
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach endpoint") as info:
        store.put("k/1", b"v")
    assert time.monotonic() - started < 10
    assert "'k/1' in s3://bucket/prefix" in str(info.value)
    with pytest.raises(StorageError, match="cannot reach endpoint"):
        store.list("k")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.timeout(60)
def test_check_gives_up_on_an_endpoint_that_never_answers(
    silent_server: int, aws_test_env: None
) -> None:
    store = ObjectStore.from_url("s3://bucket", endpoint=f"http://127.0.0.1:{silent_server}")
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach endpoint"):
        store.check()
    # Two attempts of at most 2 s each, plus the SDK's backoff between them.
    assert time.monotonic() - started < 8


# ------------------------------------------------------------------------------ credentials


@pytest.mark.timeout(60)
def test_check_and_io_report_bad_credentials(
    s3_server: S3Server, s3_enforce_auth: EnforcedAuth
) -> None:
    def store(access_key: str, secret_key: str, **kw: Any) -> ObjectStore:
        return ObjectStore(
            StorageSettings(
                url=f"s3://{s3_enforce_auth.bucket}/auth",
                endpoint=s3_server.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                **kw,
            )
        )

    good = store(s3_enforce_auth.access_key, s3_enforce_auth.secret_key)
    good.check()  # the server really enforces signatures: these credentials pass
    good.put("k", b"v")
    assert good.get("k") == b"v"

    unknown = store("AKIAUNKNOWNKEY000000", "whatever-secret")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        unknown.check()
    assert time.monotonic() - started < 3
    assert "access denied" in str(info.value)
    assert "check credentials" in str(info.value)
    assert f"s3://{s3_enforce_auth.bucket}/auth" in str(info.value)

    wrong_secret = store(s3_enforce_auth.access_key, "not-the-secret-key")
    with pytest.raises(StorageError, match="check the secret key"):
        wrong_secret.check()
    with pytest.raises(StorageError, match="access denied") as info:
        wrong_secret.get("k")
    assert "'k'" in str(info.value)
    with pytest.raises(StorageError, match="check the secret key"):
        wrong_secret.put("k2", b"v")

    # Uploads with a storage class (sent by boto3) pass the enforcing server's checks too.
    classed = store(
        s3_enforce_auth.access_key, s3_enforce_auth.secret_key, storage_class="STANDARD_IA"
    )
    classed.put("classed", b"v")
    assert classed.get("classed") == b"v"


SECRET_ID = "AKIASECRETID0123456789"
SECRET_KEY = "s3cr3t-VALUE-never-print-me"
SECRET_TOKEN = "session-TOKEN-never-print-me"


@pytest.mark.timeout(60)
def test_secrets_never_appear_in_repr_or_errors(
    s3_server: S3Server, aws_test_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for endpoint in (s3_server.endpoint, f"http://127.0.0.1:{closed_port()}"):
        settings = StorageSettings(
            url="s3://no-such-bucket-secrets/p",
            endpoint=endpoint,
            access_key=SECRET_ID,
            secret_key=SECRET_KEY,
            session_token=SECRET_TOKEN,
            storage_class="STANDARD_IA",
        )
        store = ObjectStore(settings)
        texts += [repr(settings), str(settings), repr(store), str(store), store.url]
        with pytest.raises(StorageError) as check_error:
            store.check()
        with pytest.raises(StorageError) as get_error:
            store.get("k")
        with pytest.raises(StorageError) as put_error:
            store.put("k", b"v")
        with pytest.raises(StorageError) as delete_error:
            store.delete_many(["k", "k2"])
        errors = (check_error, get_error, put_error, delete_error)
        texts += [str(e.value) for e in errors] + [repr(e.value) for e in errors]
    texts += [record.getMessage() for record in caplog.records]
    assert any("does not exist" in t for t in texts)
    assert any("cannot reach endpoint" in t for t in texts)
    # Not vacuous: boto3 did log its requests' headers, with the credentials replaced.
    assert any("X-Amz-Security-Token" in t and "***" in t for t in texts)
    for text in texts:
        for secret in (SECRET_ID, SECRET_KEY, SECRET_TOKEN):
            assert secret not in text


def test_credentials_in_the_url_are_rejected_without_echoing_them() -> None:
    with pytest.raises(InvalidArgument) as info:
        StorageSettings(url=f"s3://{SECRET_ID}:{SECRET_KEY}@bucket/prefix")
    assert SECRET_KEY not in str(info.value)
    assert SECRET_ID not in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        StorageSettings(url="s3://bucket", endpoint=f"http://user:{SECRET_KEY}@127.0.0.1:9000")
    assert SECRET_KEY not in str(info.value)


# ------------------------------------------------------------------------------ settings


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, aws_test_env: None) -> None:
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", "s3://env-bucket/env/prefix")
    monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("TIERFLOW_S3_STORAGE_CLASS", "STANDARD_IA")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")

    s = StorageSettings.from_env()
    assert (s.url, s.endpoint, s.region, s.storage_class) == (
        "s3://env-bucket/env/prefix",
        "http://127.0.0.1:9000",
        "eu-west-1",
        "STANDARD_IA",
    )
    assert (s.access_key, s.secret_key, s.session_token) == ("env-id", "env-secret", "env-token")

    monkeypatch.setenv("TIERFLOW_S3_REGION", "ap-south-1")
    assert StorageSettings.from_env().region == "ap-south-1"

    # Explicit arguments win; an explicit key pair never borrows the environment's token.
    s = StorageSettings.from_env(
        "s3://arg-bucket",
        endpoint="https://minio.example:9000",
        region="us-west-2",
        access_key="arg-id",
        secret_key="arg-secret",
        storage_class=None,
    )
    assert (s.url, s.endpoint, s.region) == (
        "s3://arg-bucket",
        "https://minio.example:9000",
        "us-west-2",
    )
    assert (s.access_key, s.secret_key, s.session_token) == ("arg-id", "arg-secret", None)
    assert s.storage_class == "STANDARD_IA"  # None means "not given"

    monkeypatch.delenv("TIERFLOW_S3_REGION")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert StorageSettings.from_env().region == "ca-central-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert StorageSettings.from_env().region == "us-east-1"

    monkeypatch.delenv("TIERFLOW_STORAGE_URL")
    with pytest.raises(InvalidArgument, match="TIERFLOW_STORAGE_URL"):
        StorageSettings.from_env()


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidArgument):
        StorageSettings(url="s3://bkt", endpoint="127.0.0.1:9000")  # scheme required
    with pytest.raises(InvalidArgument):
        StorageSettings(url="s3://bkt", endpoint="http://h:9000/path")
    with pytest.raises(InvalidArgument):
        StorageSettings(url="s3://bkt", access_key="only-half")
    with pytest.raises(InvalidArgument):
        StorageSettings(url="s3://bkt", storage_class="standard-ia")
    with pytest.raises(InvalidArgument, match="restore"):
        StorageSettings(url="s3://bkt", storage_class="GLACIER")
    with pytest.raises(InvalidArgument):
        StorageSettings(url="s3://bkt/../x")
    assert isinstance(InvalidArgument("x"), TierflowError)


def test_store_url_fixture_works_from_the_environment(store_url: str) -> None:
    store = ObjectStore.from_url(store_url)
    store.check()
    store.put("via/env", b"1")
    assert ObjectStore.from_url(store_url).get("via/env") == b"1"


# ------------------------------------------------------------------------------ S3 specifics


def test_storage_class_is_applied_on_writes(s3_server: S3Server, s3_bucket: str) -> None:
    store = ObjectStore.from_url(
        f"s3://{s3_bucket}/classed", endpoint=s3_server.endpoint, storage_class="STANDARD_IA"
    )
    store.put("small", b"v")
    with store.open_output("big.parquet") as sink, pq.ParquetWriter(sink, _table(10).schema) as w:
        w.write_table(_table(10))
    client = s3_server.client()
    for key in ("small", "big.parquet"):
        head = client.head_object(Bucket=s3_bucket, Key=f"classed/{key}")
        assert head.get("StorageClass") == "STANDARD_IA"
    assert store.get("small") == b"v"
    assert pq.read_table(store.open_input("big.parquet")).equals(_table(10))


def test_storage_class_is_ignored_on_local_disk(tmp_path: Path) -> None:
    store = ObjectStore.from_url(tmp_path.as_uri(), storage_class="STANDARD_IA")
    store.put("k", b"v")
    assert store.get("k") == b"v"


def test_checksum_calculation_is_relaxed_only_for_non_aws_endpoints(
    monkeypatch: pytest.MonkeyPatch, aws_test_env: None
) -> None:
    name = "AWS_REQUEST_CHECKSUM_CALCULATION"
    ObjectStore.from_url("s3://bucket")  # AWS itself: left alone
    assert name not in os.environ
    ObjectStore.from_url("s3://bucket", endpoint="https://bucket.s3.eu-west-1.amazonaws.com")
    assert name not in os.environ
    ObjectStore.from_url("s3://bucket", endpoint="http://127.0.0.1:9000")
    assert os.environ[name] == "WHEN_REQUIRED"
    monkeypatch.setenv(name, "WHEN_SUPPORTED")  # the user's choice wins
    ObjectStore.from_url("s3://bucket", endpoint="http://127.0.0.1:9000")
    assert os.environ[name] == "WHEN_SUPPORTED"


class _RecordingS3(http.server.BaseHTTPRequestHandler):
    """Answers every PUT with 200 and records what the client sent."""

    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = self._read_chunked()
        self.requests.append(("PUT", self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("ETag", '"etag"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.timeout(30)
def test_uploads_to_s3_compatible_stores_are_plain_path_style_bodies(aws_test_env: None) -> None:
    """pyarrow 26 sends aws-chunked bodies with a trailing checksum unless told otherwise."""
    _RecordingS3.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingS3)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        store = ObjectStore.from_url(
            "s3://bucket/prefix", endpoint=f"http://127.0.0.1:{server.server_port}"
        )
        store.put("obj.bin", b"hello world")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    [(_, path, headers, body)] = _RecordingS3.requests
    lower = {k.lower(): v for k, v in headers.items()}
    assert path == "/bucket/prefix/obj.bin"  # path-style addressing
    assert lower["host"].startswith("127.0.0.1:")
    assert body == b"hello world"
    assert lower.get("content-length") == "11"
    assert "aws-chunked" not in lower.get("content-encoding", "")
    assert "x-amz-trailer" not in lower
    assert not lower["x-amz-content-sha256"].startswith("STREAMING")
