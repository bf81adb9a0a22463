"""The store's write path: durable file:// writes, S3 uploads through boto3, batch deletes."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.warm.storage import ObjectStore, StorageSettings

from tests.warm.conftest import FsOps, S3Server

# ------------------------------------------------------------------------------ file:// durability


@pytest.mark.timeout(30)
def test_local_put_syncs_the_file_its_directory_and_new_parents(
    tmp_path: Path, fs_ops: FsOps
) -> None:
    root = tmp_path / "lake"  # does not exist yet: put creates it, and must sync its entry
    store = ObjectStore.from_url(root.as_uri())
    target = root / "warm" / "history" / "x.parquet"
    store.put("warm/history/x.parquet", b"data")
    assert target.read_bytes() == b"data"
    for made in (root, root / "warm", root / "warm" / "history"):
        assert ("mkdir", str(made)) in fs_ops.events
    fs_ops.assert_durable(target)
    # The new root's own entry lives in tmp_path: synced too.
    assert str(tmp_path) in fs_ops.fsyncs()
    assert not [p for p in target.parent.iterdir() if p.name != "x.parquet"]  # no temp left

    # Into an existing directory: the file and that directory, nothing above it.
    fs_ops.events.clear()
    store.put("warm/history/y.parquet", b"more")
    fs_ops.assert_durable(root / "warm" / "history" / "y.parquet")
    assert not [e for e in fs_ops.events if e[0] == "mkdir"]
    assert len(fs_ops.fsyncs()) == 2


@pytest.mark.timeout(30)
def test_local_put_many_syncs_each_file_and_each_directory_once(
    tmp_path: Path, fs_ops: FsOps
) -> None:
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    keys = [f"warm/d{i % 2}/f{i}.bin" for i in range(6)]
    store.put_many((k, k.encode()) for k in keys)
    for key in keys:
        fs_ops.assert_durable(tmp_path / "lake" / key)
    synced = fs_ops.fsyncs()
    dirs = [str(tmp_path / "lake" / "warm" / d) for d in ("d0", "d1")]
    for d in dirs:
        assert synced.count(d) == 1, synced
    assert len(synced) == len(set(synced)), "something was synced twice"
    assert [k for k, _ in store.list("")] == sorted(keys)


@pytest.mark.timeout(30)
def test_local_open_output_syncs_on_close(tmp_path: Path, fs_ops: FsOps) -> None:
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    with store.open_output("deep/new/dir/f.bin") as sink:
        sink.write(b"abc")
        assert not [e for e in fs_ops.events if e[0] in ("fsync", "replace")]
    fs_ops.assert_durable(tmp_path / "lake" / "deep" / "new" / "dir" / "f.bin")


@pytest.mark.timeout(30)
def test_a_failed_batch_is_not_synced_and_leaves_no_temp(tmp_path: Path, fs_ops: FsOps) -> None:
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    with pytest.raises(RuntimeError), store.batch() as out:
        out.put("a/1", b"1")
        raise RuntimeError("the writer died")
    assert ("fsync", str(tmp_path / "lake" / "a")) not in fs_ops.events
    with pytest.raises(StorageError, match="closed"):
        out.put("a/2", b"2")
    assert store.list("", unfinished=True) == [("a/1", 1)]


def test_unfinished_writes_are_listed_only_on_request(tmp_path: Path) -> None:
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    store.put("warm/x/done.bin", b"1")
    # What a crash between creating and renaming a temporary file leaves behind.
    leftover = tmp_path / "lake" / "warm" / "x" / ".half.bin.tierflow-tmp-0123456789ab"
    leftover.write_bytes(b"ha")
    assert store.list("warm") == [("warm/x/done.bin", 1)]
    listed = store.list("warm", unfinished=True)
    assert listed == [("warm/x/.half.bin.tierflow-tmp-0123456789ab", 2), ("warm/x/done.bin", 1)]
    assert store.unfinished_target(listed[0][0]) == "warm/x/half.bin"
    assert store.unfinished_target("warm/x/done.bin") is None
    store.delete_many([listed[0][0]])
    assert not leftover.exists()


def test_deletes_are_durable(tmp_path: Path, fs_ops: FsOps) -> None:
    """An erased object must not come back after a power cut: its directory is fsync'd."""
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    store.put_many([("a/x/1", b"1"), ("a/x/2", b"2"), ("a/y/3", b"3")])
    fs_ops.events.clear()
    store.delete_many(["a/x/1", "a/y/3", "a/x/missing"])
    lake = tmp_path / "lake" / "a"
    for name, folder in (("x/1", "x"), ("y/3", "y")):
        gone = fs_ops.index("unlink", str(lake / name))
        assert fs_ops.index("fsync", str(lake / folder)) > gone
    assert fs_ops.fsyncs().count(str(lake / "x")) == 1  # once per directory
    assert store.list("a") == [("a/x/2", 1)]


def test_a_delete_whose_directory_another_process_removed_syncs_the_parent(
    tmp_path: Path, fs_ops: FsOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two storage checks share the probe directory: one may remove it, emptied, between the
    other's unlink and its directory sync. The delete still succeeds, and the removal lasts."""
    import tierflow.warm.storage.local as local

    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    store.put("shared/mine", b"1")
    real_unlink = os.unlink

    def unlink_then_other_process_rmdirs(path: Any, *args: Any, **kw: Any) -> None:
        real_unlink(path, *args, **kw)
        os.rmdir(Path(path).parent)  # what the other process's check does after its delete

    monkeypatch.setattr(local.os, "unlink", unlink_then_other_process_rmdirs)
    fs_ops.events.clear()
    store.delete_many(["shared/mine"])
    assert not (tmp_path / "lake" / "shared").exists()
    assert str(tmp_path / "lake") in fs_ops.fsyncs()


# ------------------------------------------------------------------------------ S3 uploads


def s3_store(server: S3Server, bucket: str, prefix: str = "p", **kw: Any) -> ObjectStore:
    return ObjectStore(
        StorageSettings(
            url=f"s3://{bucket}/{prefix}",
            endpoint=server.endpoint,
            region=server.region,
            access_key=server.access_key,
            secret_key=server.secret_key,
            **kw,
        )
    )


@dataclass
class Requests:
    """Operations a boto3 client sent, with their HTTP headers."""

    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


def record_requests(client: Any) -> Requests:
    """Record every request ``client`` sends (retries included), through botocore's events."""
    requests = Requests()

    def before_send(request: Any, event_name: str, **_: Any) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        requests.sent.append((event_name.rsplit(".", 1)[-1], headers))

    client.meta.events.register("before-send.s3", before_send)
    return requests


@pytest.mark.timeout(60)
def test_deleting_2100_objects_takes_three_requests(s3_server: S3Server, s3_bucket: str) -> None:
    # 1,000 keys per DeleteObjects (S3's cap): two full requests and one of 100. S3 answers a
    # delete of a missing key as deleted, so only the first and last key of each request are
    # written (writing all 2,100 took 14 s of the suite's time and proves nothing more).
    store = s3_store(s3_server, s3_bucket, "bulk")
    keys = [f"gc/{i:05d}-{uuid.uuid4().hex[:6]}.bin" for i in range(2100)]
    written = [keys[i] for i in (0, 999, 1000, 1999, 2000, 2099)]
    mine = s3_server.client()
    for k in written:
        mine.put_object(Bucket=s3_bucket, Key=f"bulk/{k}", Body=b"")
    store.put("keep/me", b"k")
    requests = record_requests(store.client)

    store.delete_many(keys)

    assert requests.names() == ["DeleteObjects"] * 3
    # Stores that are not AWS want Content-MD5 on DeleteObjects.
    assert all("Content-MD5" in headers for _, headers in requests.sent)
    left = mine.list_objects_v2(Bucket=s3_bucket, Prefix="bulk/")
    assert [o["Key"] for o in left.get("Contents", [])] == ["bulk/keep/me"]


@pytest.mark.timeout(60)
def test_s3_put_sends_storage_class_and_sha256(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_store(s3_server, s3_bucket, storage_class="STANDARD_IA")
    requests = record_requests(store.client)
    store.put("a/obj.bin", b"hello")
    [(name, headers)] = requests.sent
    assert name == "PutObject"
    assert headers["x-amz-storage-class"] == "STANDARD_IA"
    assert headers["x-amz-checksum-sha256"] == "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key="p/a/obj.bin", ChecksumMode="ENABLED")
    assert head["StorageClass"] == "STANDARD_IA"
    # The store keeps the checksum (AWS also verifies it: moto does not, so a wrong one is
    # not tested here).
    assert head["ChecksumSHA256"] == "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
    # A digest the caller already has is sent as is.
    requests.sent.clear()
    store.put("a/again", b"hello", sha256=hashlib.sha256(b"hello").hexdigest())
    assert requests.sent[0][1]["x-amz-checksum-sha256"] == head["ChecksumSHA256"]


@pytest.mark.timeout(120)
def test_s3_open_output_streams_a_multipart_upload(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_store(s3_server, s3_bucket, storage_class="STANDARD_IA")
    requests = record_requests(store.client)
    chunk = os.urandom(1024 * 1024)
    with store.open_output("big.bin") as sink:
        for _ in range(40):
            sink.write(chunk)
    names = requests.names()
    assert names[0] == "CreateMultipartUpload" and names[-1] == "CompleteMultipartUpload"
    assert names.count("UploadPart") == 3  # 16 + 16 + 8 MiB
    assert requests.sent[0][1]["x-amz-storage-class"] == "STANDARD_IA"
    assert store.size("big.bin") == 40 * len(chunk)
    with store.open_input("big.bin") as src:
        src.seek(39 * len(chunk))
        assert src.read() == chunk
    client = s3_server.client()
    assert client.head_object(Bucket=s3_bucket, Key="p/big.bin")["StorageClass"] == "STANDARD_IA"
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


@pytest.mark.timeout(60)
def test_check_rejects_a_storage_class_the_store_refuses(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = s3_store(s3_server, s3_bucket, storage_class="NOT_A_CLASS")
    with pytest.raises(StorageError, match="does not accept the storage class"):
        store.check()


# ------------------------------------------------------------------------------ settings


def test_settings_build_clients_for_s3_compatible_endpoints(
    aws_test_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = StorageSettings(
        url="s3://bkt/p",
        endpoint="http://127.0.0.1:9000",
        region="eu-west-3",
        access_key="AKIAEXAMPLE",
        secret_key="secret-example",
        session_token="token-example",
    )
    config = settings.s3_client().meta.config
    assert config.region_name == "eu-west-3"
    assert config.s3["addressing_style"] == "path"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert settings.arrow_filesystem().region == "eu-west-3"
    assert settings.iceberg_io_properties() == {
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "eu-west-3",
        "s3.access-key-id": "AKIAEXAMPLE",
        "s3.secret-access-key": "secret-example",
        "s3.session-token": "token-example",
        "s3.force-virtual-addressing": "false",
        "s3.connect-timeout": "10.0",
        "s3.request-timeout": "60.0",
    }
    # AWS itself: the SDK's default checksums (arrow_filesystem() set the process-wide
    # variable for the endpoint above: pyarrow has no option for it).
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION")
    aws = StorageSettings(url="s3://bkt", region="us-west-2").s3_client().meta.config
    assert aws.region_name == "us-west-2"
    assert aws.request_checksum_calculation != "when_required"
    assert StorageSettings(url="s3://bkt").iceberg_io_properties()["s3.region"] == "us-east-1"


def test_settings_come_back_from_their_iceberg_properties() -> None:
    """pyiceberg's FileIO gets properties only; the store it reads through is the same one."""
    full = StorageSettings(
        url="s3://bkt",
        endpoint="http://127.0.0.1:9000",
        region="eu-west-3",
        access_key="AKIAEXAMPLE",
        secret_key="secret-example",
        session_token="token-example",
    )
    for settings in (full, StorageSettings(url="s3://bkt", region="us-west-2")):
        props = {**settings.iceberg_io_properties(), "uri": "sqlite:///c", "warehouse": "w"}
        assert StorageSettings.from_iceberg_io_properties("s3://bkt", props) == settings
    props = full.iceberg_io_properties()
    # S3 options the settings cannot express: the FileIO keeps pyarrow's way.
    for extra in ("s3.role-arn", "s3.signer-uri", "s3.proxy-uri", "s3.anonymous"):
        assert StorageSettings.from_iceberg_io_properties("s3://bkt", {**props, extra: "x"}) is None
    virtual = {**props, "s3.force-virtual-addressing": "true"}
    assert StorageSettings.from_iceberg_io_properties("s3://bkt", virtual) is None


def test_read_all_is_one_get_and_missing_is_file_not_found(make_store: MakeStore, request: Any):
    store = make_store()
    store.put("cold/m.avro", b"abc" * 1000)
    counted = request.getfixturevalue("s3_server").requests if store.url.startswith("s3") else None
    before = dict(counted or {})
    assert store.read_all(store.path("cold/m.avro")) == b"abc" * 1000
    if counted is not None:
        delta = {
            m: counted[m] - before.get(m, 0) for m in counted if counted[m] != before.get(m, 0)
        }
        assert delta == {"GET": 1}
    with pytest.raises(FileNotFoundError):
        store.read_all(store.path("cold/none.avro"))


def test_local_settings_have_no_s3_client(tmp_path: Path) -> None:
    settings = StorageSettings(url=tmp_path.as_uri())
    with pytest.raises(InvalidArgument, match="not an s3:// location"):
        settings.s3_client()
    assert settings.iceberg_io_properties() == {}
    with pytest.raises(InvalidArgument):
        _ = ObjectStore(settings).client


MakeStore = Callable[..., ObjectStore]


def test_put_accepts_memoryviews(make_store: MakeStore) -> None:
    store = make_store()
    data = bytearray(b"x" * 1000)
    store.put("mv", memoryview(data)[10:20])
    assert store.get("mv") == b"x" * 10
