"""The forensic scanner finds a marker in every form it can hide in (else erasure tests prove
nothing): compressed Parquet pages, deflated Avro manifests, gzip, SQLite free pages and WAL."""

from __future__ import annotations

import gzip
import os
import sqlite3
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from tierflow.cold import tables
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.writer import ColdWriter
from tierflow.warm.storage import ObjectStore

from tests.tiering.forensics import find_marker, scan_bytes

pytestmark = pytest.mark.timeout(60)


def _rows(dataset: str, ids: list[str], payload: dict[str, str]) -> pa.Table:
    schema = tables.arrow_schema(dataset)
    n = len(ids)
    cols: dict[str, list[object]] = {}
    for f in schema:
        if f.name == "workflow_id":
            cols[f.name] = ids
        elif f.name in payload:
            cols[f.name] = [payload[f.name] if i == 0 else "{}" for i in range(n)]
        elif f.name == "finished_date":
            cols[f.name] = [date(2026, 1, 2)] * n
        elif pa.types.is_string(f.type):
            cols[f.name] = ["x"] * n
        elif pa.types.is_int64(f.type):
            cols[f.name] = list(range(1, n + 1))
        elif pa.types.is_float64(f.type):
            cols[f.name] = [0.0] * n
        else:
            cols[f.name] = [0] * n
    return pa.table(cols).cast(schema)


def test_markers_in_cold_files_are_found_decoded(
    make_store: Callable[..., ObjectStore], tmp_path: Path
) -> None:
    store = make_store()
    store.check()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{data_dir}/catalog.sqlite"), store)
    wid = f"wf-{uuid.uuid4().hex}"
    secret = f"secret-{uuid.uuid4().hex}"
    try:
        rows = _rows("workflows", [wid, "zz-other"], {"input": f'{{"card": "{secret}"}}'})
        ColdWriter(cold).commit("workflows", f"c-{uuid.uuid4()}", ["b1"], [rows])
        by_id = find_marker(data_dir, store, wid)
        by_secret = find_marker(data_dir, store, secret)
    finally:
        cold.close()
    # The id is a column bound: raw in the Parquet footer, deflated in the manifest.
    assert any("parquet column workflow_id" in f for f in by_id), by_id
    assert any("avro block" in f and "decompressed" in f for f in by_id), by_id
    assert not any(".avro [raw" in f for f in by_id), "manifests are compressed: decode them"
    # A JSON column has no statistics; its values are found in the decoded pages.
    assert any(f.endswith("[parquet column input]") for f in by_secret), by_secret
    assert not any("avro" in f for f in by_secret), by_secret
    assert find_marker(data_dir, store, f"absent-{uuid.uuid4().hex}") == []


def test_markers_in_sqlite_free_pages_wal_and_gzip(
    make_store: Callable[..., ObjectStore], tmp_path: Path
) -> None:
    store = make_store()
    marker = f"m-{uuid.uuid4().hex}"
    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # Debian's SQLite zeroes freed pages by default; other builds do not.
    conn.execute("PRAGMA secure_delete=OFF")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", ("pad" * 3000 + marker,))
    found_wal = find_marker(tmp_path, store, marker)
    assert any("db.sqlite-wal [raw sqlite wal frame" in f for f in found_wal), found_wal
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("DELETE FROM t")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    found = find_marker(tmp_path, store, marker)
    assert any("db.sqlite [raw sqlite free page" in f for f in found), found
    db.unlink()
    store.put("gz/metadata.json.gz", gzip.compress(f'{{"a": "{marker}"}}'.encode()))
    found = find_marker(tmp_path, store, marker)
    assert [f.rsplit(" [", 1)[1] for f in found] == ["gzip/raw]"], found
    store.delete("gz/metadata.json.gz")
    assert find_marker(tmp_path, store, marker) == []


def test_a_random_key_that_starts_like_gzip_is_not_a_finding():
    # The audit key is 32 random bytes: about one in 65,536 starts with gzip's two magic
    # bytes (an erasure test once failed on it), one in 16.7 million with its three.
    needles = (b"marker-7f3a",)
    for head in (b"\x1f\x8b", b"\x1f\x8b\x08"):
        assert scan_bytes(head + os.urandom(30), needles, "audit.key") == []


def test_a_gz_file_is_searched_inside_and_a_broken_one_is_a_finding():
    needles = (b"marker-7f3a",)
    packed = gzip.compress(b'{"id": "marker-7f3a"}')
    assert needles[0] not in packed
    assert scan_bytes(packed, needles, "00001-x.gz.metadata.json") == ["gzip/raw"]
    [how] = scan_bytes(packed[:10] + b"\x00" * 8, needles, "00001-x.gz.metadata.json")
    assert how.startswith("gzip unreadable")
