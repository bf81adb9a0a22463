"""What a real tiering pass leaves in storage: storage class on S3, durability on file://."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm.storage import ObjectStore, StorageSettings

from tests.tiering.tier_app import LATER, WORKFLOWS, populate
from tests.warm.conftest import FsOps, S3Server

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("how", ["environment", "settings"])
async def test_tiered_objects_carry_the_storage_class(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    url = f"s3://{s3_bucket}/lake-{how}"
    if how == "environment":
        # What a deployment sets; Tierflow builds the store itself from storage_url.
        monkeypatch.setenv("TIERFLOW_S3_STORAGE_CLASS", "STANDARD_IA")
        monkeypatch.setenv("TIERFLOW_S3_ENDPOINT", s3_server.endpoint)
        tf = Tierflow(tmp_path / "data", WORKFLOWS, storage_url=url)
    else:
        store = ObjectStore(
            StorageSettings(
                url=url,
                endpoint=s3_server.endpoint,
                region=s3_server.region,
                access_key=s3_server.access_key,
                secret_key=s3_server.secret_key,
                storage_class="STANDARD_IA",
            )
        )
        tf = Tierflow(tmp_path / "data", WORKFLOWS, warm_store=store)
    async with tf:
        ids = await populate(tf, 12)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == len(ids)
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"lake-{how}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    parquet = [k for k in keys if k.endswith(".parquet")]
    manifests = [k for k in keys if "/warm/manifests/" in k]
    assert len(parquet) == report.files_written >= 2
    assert len(manifests) == 1
    assert sorted(keys) == sorted(parquet + manifests)  # nothing else (the probe is gone)
    for key in keys:
        assert client.head_object(Bucket=s3_bucket, Key=key).get("StorageClass") == "STANDARD_IA"


async def test_tiered_files_are_durable_before_the_commit(
    tmp_path: Path, fs_ops: FsOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = WarmLedger.commit

    def commit(self: WarmLedger, batch_id: str, *args: Any, **kw: Any) -> int:
        # The ledger commit (one fsync'd index transaction), logged among the file operations.
        fs_ops.events.append(("mark", "commit"))
        moved = real_commit(self, batch_id, *args, **kw)
        fs_ops.events.append(("mark", "committed"))
        return moved

    monkeypatch.setattr(WarmLedger, "commit", commit)
    lake = tmp_path / "lake"  # created by the pass: its new directories must be synced too
    store = ObjectStore.from_url(lake.as_uri())
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 30)
        fs_ops.events.clear()
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == len(ids)
        [batch_id] = report.batches
        batch = WarmLedger(tf.index).get(batch_id)
    commit = fs_ops.index("mark", "commit")
    committed = fs_ops.index("mark", "committed")
    assert fs_ops.events.count(("mark", "commit")) == 1
    keys = [k for k, _ in store.list("warm")]
    parquet = [k for k in keys if k.endswith(".parquet")]
    assert len(parquet) == report.files_written >= 2
    for key in parquet:
        fs_ops.assert_durable(lake / key, before=commit)
    # The manifest's content is durable with the commit: it is in the committed ledger row.
    [manifest] = [k for k in keys if k.startswith("warm/manifests/")]
    assert batch is not None and batch.state == "done" and batch.manifest is not None
    assert store.get(manifest) == batch.manifest
    assert {f["key"] for f in json.loads(batch.manifest)["files"]} == set(parquet)
    # The manifest object is published after the commit (readers only ever see committed
    # batches), and is durable before the first hot file is deleted.
    deletes = [
        i for i, e in enumerate(fs_ops.events) if e[0] == "unlink" and e[1].endswith(".sqlite")
    ]
    assert deletes and deletes[0] > committed
    fs_ops.assert_durable(lake / manifest, before=deletes[0])
    _, tmp = fs_ops.renamed_to(str(lake / manifest))
    assert fs_ops.renamed_to(str(lake / manifest))[0] > committed
    assert fs_ops.index("fsync", tmp) > committed  # not even written before the commit
