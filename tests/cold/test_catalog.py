"""Catalog settings: URL forms, TIERFLOW_CATALOG_* properties, secrets kept out of messages."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from tierflow import InvalidArgument, StorageError
from tierflow.cold import tables
from tierflow.cold.catalog import CatalogSettings, ColdTables, redact_url
from tierflow.cold.writer import ColdWriter
from tierflow.warm.storage import ObjectStore, StorageSettings

from tests.warm.conftest import S3Server

pytestmark = pytest.mark.timeout(60)


def test_default_is_catalog_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("TIERFLOW_CATALOG_URL", raising=False)
    settings = CatalogSettings.from_env(data_dir=tmp_path)
    assert settings.url == f"sqlite:///{tmp_path.resolve() / 'catalog.sqlite'}"
    assert not settings.is_rest


def test_url_and_extra_properties_from_the_environment(monkeypatch):
    monkeypatch.setenv("TIERFLOW_CATALOG_URL", "https://catalog.example/api")
    monkeypatch.setenv("TIERFLOW_CATALOG_TOKEN", "t0ken")
    monkeypatch.setenv("TIERFLOW_CATALOG_S3__SIGNER_URI", "https://signer")
    settings = CatalogSettings.from_env(data_dir="/ignored")
    assert settings.is_rest
    assert settings.properties == {"token": "t0ken", "s3.signer-uri": "https://signer"}
    store = ObjectStore(
        StorageSettings(
            url="s3://bucket/p", endpoint="http://127.0.0.1:1", access_key="k", secret_key="s"
        )
    )
    props = settings.pyiceberg_properties(store)
    assert props["type"] == "rest" and props["uri"] == "https://catalog.example/api"
    assert props["warehouse"] == "s3://bucket/p/cold"
    assert props["s3.region"] == "us-east-1" and props["s3.endpoint"] == "http://127.0.0.1:1"
    assert props["token"] == "t0ken"
    assert "t0ken" not in repr(settings)


def test_an_explicit_url_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("TIERFLOW_CATALOG_URL", "sqlite:////env.sqlite")
    assert CatalogSettings.from_env("sqlite:////arg.sqlite").url == "sqlite:////arg.sqlite"


@pytest.mark.parametrize("url", ["mysql://x/y", "file:///tmp/c.sqlite", "catalog.sqlite", ""])
def test_unknown_catalog_urls_are_refused(url: str):
    with pytest.raises(InvalidArgument, match="catalog URL"):
        CatalogSettings(url=url)


def test_passwords_are_redacted():
    assert redact_url("postgresql+psycopg://app:hunter2@db:5432/cat") == (
        "postgresql+psycopg://app:***@db:5432/cat"
    )
    assert redact_url("sqlite:////a/b.sqlite") == "sqlite:////a/b.sqlite"


def test_an_unreachable_catalog_fails_with_storage_error_and_no_secret(tmp_path: Path):
    store = ObjectStore(StorageSettings(url=(tmp_path / "lake").as_uri()))
    settings = CatalogSettings(url="postgresql+psycopg2://app:hunter2@127.0.0.1:9/cat")
    cold = ColdTables(settings, store)
    with pytest.raises(StorageError) as err:
        cold.check()
    assert "hunter2" not in str(err.value)
    assert "app:***@127.0.0.1:9" in str(err.value)


def test_a_catalog_in_a_missing_directory_names_it(tmp_path: Path):
    store = ObjectStore(StorageSettings(url=(tmp_path / "lake").as_uri()))
    missing = tmp_path / "nowhere" / "catalog.sqlite"
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{missing}"), store)
    with pytest.raises(StorageError, match="does not exist"):
        cold.check()
    assert not missing.parent.exists()


def one_workflow_row() -> pa.Table:
    """One row of the cold workflows table (a completed workflow with empty payloads)."""
    schema = tables.arrow_schema("workflows")
    row: dict[str, object] = {f.name: None for f in schema}
    row.update({f.name: "{}" for f in schema if not f.nullable and f.type == pa.string()})
    row.update({f.name: 0 for f in schema if not f.nullable and f.type != pa.string()})
    row.update(
        workflow_id="w1",
        run_id="r",
        workflow_type="t",
        status="completed",
        created_at=0,
        finished_at=0,
        step_count=1,
        tier="cold",
        finished_date=0,
        batch_id="b1",
    )
    return pa.Table.from_pylist([row], schema=schema)


def test_a_local_warehouse_fsyncs_every_file_a_commit_references(tmp_path: Path, monkeypatch):
    """Data files, manifests, manifest list and metadata are on disk before the catalog moves."""
    from tierflow.cold import fileio

    synced: list[str] = []
    real_close = fileio._SyncOnClose.close

    def close(self: fileio._SyncOnClose) -> None:
        real_close(self)
        synced.append(self._path)

    monkeypatch.setattr(fileio._SyncOnClose, "close", close)
    store = ObjectStore(StorageSettings(url=(tmp_path / "lake").as_uri()))
    store.check()
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path / 'catalog.sqlite'}"), store)
    part = one_workflow_row()
    snap = ColdWriter(cold).commit("workflows", "c1", ["b1"], [part])
    table = cold.table("workflows", refresh=True)
    assert type(table.io).__name__ == "DurableFileIO"
    needed = {table.metadata_location, snap.manifest_list}
    needed |= {m.manifest_path for m in snap.manifests(table.io)}
    needed |= {t.file.file_path for t in table.scan().plan_files()}
    assert {p.removeprefix("file://") for p in needed} <= set(synced)


def test_an_s3_warehouse_commit_sends_no_request_it_does_not_need(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
):
    """A commit to S3 sends one PUT per file (no multipart upload: create, part, complete); the
    length pyiceberg records for a data file or manifest just written costs no HEAD, and the
    metadata it reads whole is one GET (no HEAD for the size first).

    Counted on the test S3 server, so the requests cannot come back unnoticed.
    """
    store = ObjectStore(s3_server.settings(s3_bucket))
    store.check()
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path / 'catalog.sqlite'}"), store)
    cold.table("workflows", create=True)
    before = Counter(s3_server.requests)
    snap = ColdWriter(cold).commit("workflows", "c1", ["b1"], [one_workflow_row()])
    sent = Counter(s3_server.requests)
    sent.subtract(before)
    table = cold.table("workflows", refresh=True)
    manifests = snap.manifests(table.io)
    data = [t.file for t in table.scan().plan_files()]
    written = len(data) + len(manifests) + 2  # + the manifest list and the metadata JSON
    assert (len(data), len(manifests)) == (1, 1)
    assert sent["POST"] == 0, sent
    assert sent["PUT"] == written, sent
    # The metadata JSON is read twice (the table's refresh before the commit, the reload after
    # it), each with one GET and no HEAD for its size. pyiceberg's check that the new metadata
    # JSON's name is free (a HEAD and a one-key listing) is skipped: the name holds a new uuid4.
    assert (sent["HEAD"], sent["GET"]) == (0, 2), sent
    assert [f.file_size_in_bytes for f in data] == [
        store.size(f.file_path.removeprefix(f"s3://{s3_bucket}/lake/")) for f in data
    ]
    assert [m.manifest_length for m in manifests] == [
        store.size(m.manifest_path.removeprefix(f"s3://{s3_bucket}/lake/")) for m in manifests
    ]
    assert type(table.io).__name__ == "ObjectFileIO"


def test_an_s3_metadata_name_without_a_fresh_uuid_is_still_checked_free(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
):
    """Only a name holding a uuid4 skips pyiceberg's is-it-free check; any other still refuses
    to replace an object."""
    store = ObjectStore(s3_server.settings(s3_bucket))
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path / 'catalog.sqlite'}"), store)
    io = cold.table("workflows", create=True).io
    taken = f"s3://{s3_bucket}/lake/v1.metadata.json"
    with io.new_output(taken).create() as out:
        out.write(b"{}")
    with pytest.raises(FileExistsError):
        io.new_output(taken).create()
